package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/aiproxy/aiproxy/db"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// PostgreSQL (CONTRACT section 8). The same *DB, methods and statements
// serve both stores: the statements are written once, with SQLite's ?
// placeholders, and pgConn rewrites each to PostgreSQL's $n once (then
// cached), so no call site knows which store it talks to. What differs is
// here and in db/migrations/postgres: the schema, in PostgreSQL's dialect,
// adds the few SQLite functions the statements use (sum of a comparison,
// strftime's date, typeof, a nocase collation); every write transaction
// takes one advisory lock, the way SQLite's immediate transactions take its
// write lock, so the read-then-write steps of admin changes stay as
// serialized across instances as they are across processes on one file;
// there is no file, lock file, key file, WAL or VACUUM.

// IsPostgres reports whether dsn names a PostgreSQL database (postgres://
// or postgresql://) rather than a SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// RedactDSN returns what may be shown of a PostgreSQL DSN: its scheme, host
// and database, never its user, password or parameters. A DSN that does not
// parse shows as "postgres://(unparsable DSN)".
func RedactDSN(dsn string) string {
	host, name := dsnHostDB(dsn)
	return "postgres://" + host + "/" + name
}

func dsnHostDB(dsn string) (host, name string) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)", ""
	}
	host = u.Host
	if host == "" {
		host = u.Query().Get("host") // a unix socket folder
	}
	return host, strings.TrimPrefix(u.Path, "/")
}

// Lock ids of pg_advisory_lock, in one space of aiproxy's own.
const (
	pgLockWrite   = 0x61697078_0001 // every write transaction (xact lock)
	pgLockMigrate = 0x61697078_0002 // applying migrations (session lock)
	pgLockServe   = 0x61697078_0003 // serve holds it shared, rekey exclusive
	// pgLockRetention is held by the one instance folding old usage rows
	// (session lock).
	pgLockRetention = 0x61697078_0004
)

func openPostgres(ctx context.Context, dsn string, o options) (*DB, error) {
	shown := RedactDSN(dsn)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN: name only what is safe.
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "database %s: not a valid PostgreSQL DSN", shown)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	sdb := sql.OpenDB(pgConnector{base: stdlib.GetConnector(*cfg), rebind: &rebinder{}})
	// Enough for serve's lookups, the usage writer and limit reservations;
	// with serve's listener (pg_listen.go), outside the pool, an instance
	// holds at most nine: ten instances stay under PostgreSQL's default
	// 100 connections.
	sdb.SetMaxOpenConns(8)
	sdb.SetMaxIdleConns(8)
	sdb.SetConnMaxIdleTime(5 * time.Minute)
	d := &DB{sql: sdb, path: shown, real: shown, log: o.log, pg: true, pgPassword: cfg.Password,
		pgCfg: cfg.Config.Copy(), watchOpts: o.watch}
	fail := func(err error) (*DB, error) {
		d.closeStmts()
		sdb.Close()
		return nil, d.pgOpenError(err)
	}
	if err := sdb.PingContext(ctx); err != nil {
		return fail(err)
	}
	if err := d.migratePostgres(ctx); err != nil {
		return fail(err)
	}
	if o.secret.text == nil && o.secret.file == "" {
		return fail(aiproxy.Errorf(aiproxy.EINVALID,
			"database %s is PostgreSQL: give the secret that seals provider keys (AIPROXY_SECRET_KEY or --secret-key-file); "+
				"no key file is made beside a DSN", shown))
	}
	if o.forget {
		if err := d.forgetProviderKeys(ctx); err != nil {
			return fail(err)
		}
	}
	if err := d.openSecret(ctx, o.secret); err != nil {
		return fail(err)
	}
	if err := d.prepare(ctx); err != nil {
		return fail(err)
	}
	if d.cache, err = newCache(ctx, sdb, false); err != nil {
		return fail(err)
	}
	d.cache.log, d.cache.name = o.log, shown
	return d, nil
}

// pgOpenError turns an error met while opening into one line that names the
// host and database, never the password.
func (d *DB) pgOpenError(err error) error {
	var ae *aiproxy.Error
	if errors.As(err, &ae) {
		return err
	}
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &pe):
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database %s: %s (SQLSTATE %s)", d.path, d.scrub(pe.Message), pe.Code)
	case errors.As(err, &ce), pgconn.Timeout(err), errors.Is(err, context.DeadlineExceeded):
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database %s is unreachable: %s", d.path, d.scrub(rootCause(err)))
	}
	return fmt.Errorf("open db %s: %s", d.path, d.scrub(err.Error()))
}

// rootCause is the innermost error's text: pgx's outer ones repeat the
// connection's parameters.
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// scrub removes the DSN's password from s, should a driver message quote it.
func (d *DB) scrub(s string) string {
	if d.pgPassword == "" {
		return s
	}
	s = strings.ReplaceAll(s, d.pgPassword, "xxxxx")
	return strings.ReplaceAll(s, url.QueryEscape(d.pgPassword), "xxxxx")
}

// migratePostgres applies db.PostgresMigrations under a session advisory
// lock, each in its own transaction: of ten instances that start together,
// one applies them and the others find them applied once they get the lock.
func (d *DB) migratePostgres(ctx context.Context) error {
	names, err := migrationNames(db.PostgresMigrations, "migrations/postgres")
	if err != nil {
		return err
	}

	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", int64(pgLockMigrate)); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", int64(pgLockMigrate))
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return err
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	if err := checkKnown(applied, names); err != nil {
		return err
	}
	for _, name := range names {
		if applied[name] {
			continue
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := applyMigration(ctx, tx, db.PostgresMigrations, "migrations/postgres", name); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// pgCode returns the SQLSTATE in err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgDBError maps the PostgreSQL errors a caller can act on to domain errors.
func (d *DB) pgDBError(err error) error {
	code := pgCode(err)
	db := "database" // dbError has no *DB: no name then, rather than an empty one
	if d.path != "" {
		db += " " + d.path
	}
	switch {
	case code == "40001" || code == "40P01" || code == "55P03":
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database is busy (%s), try again", code)
	case code == "53100":
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database disk is full: not changed")
	case strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03":
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "%s is unavailable: not changed", db)
	case code == "" && isConnError(err):
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "%s is unreachable: not changed", db)
	case code == "" && isConnLost(err):
		// Lost in the middle: a commit may or may not have been made.
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "connection to %s lost: check and try again", db)
	}
	return err
}

// isConnLost reports whether err is a connection that broke while in use
// (the server stopped or restarted, the network failed), as opposed to an
// error of the statement.
func isConnLost(err error) bool {
	var ne net.Error
	return errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &ne)
}

func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || errors.Is(err, driver.ErrBadConn) || pgconn.SafeToRetry(err)
}

// pgConnector makes the pool's connections: pgx's, wrapped in pgConn.
type pgConnector struct {
	base   driver.Connector
	rebind *rebinder
}

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{Conn: conn.(*stdlib.Conn), rebind: c.rebind}, nil
}

func (c pgConnector) Driver() driver.Driver { return c.base.Driver() }

// pgConn is pgx's database/sql connection with SQLite's ? placeholders
// rewritten to $n, and bool arguments passed as 0/1 (the schema's flags are
// BIGINT, as SQLite's INTEGER).
type pgConn struct {
	*stdlib.Conn
	rebind *rebinder
}

func (c *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, c.rebind.get(query))
}

func (c *pgConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.ExecContext(ctx, c.rebind.get(query), args)
}

func (c *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.QueryContext(ctx, c.rebind.get(query), args)
}

func (c *pgConn) CheckNamedValue(nv *driver.NamedValue) error {
	if b, ok := nv.Value.(bool); ok {
		nv.Value = int64(0)
		if b {
			nv.Value = int64(1)
		}
	}
	return c.Conn.CheckNamedValue(nv)
}

// rebinder rewrites statements once each: the store's statements are a
// fixed set of texts (values always go in as arguments), so the cache stays
// small, and a request pays one map lookup, not a rewrite.
type rebinder struct {
	m  sync.Map // query → rewritten
	n  int      // entries, bounded
	mu sync.Mutex
}

const maxRebound = 4096

func (r *rebinder) get(q string) string {
	if v, ok := r.m.Load(q); ok {
		return v.(string)
	}
	out := rebind(q)
	r.mu.Lock()
	if r.n < maxRebound {
		r.n++
		r.m.Store(q, out)
	}
	r.mu.Unlock()
	return out
}

// rebind rewrites SQLite's placeholders to PostgreSQL's: ?NNN to $NNN and
// each bare ? to the next $n, outside quotes, comments and dollar-quoted
// bodies.
func rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(q[i+1:], c)
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+2])
			i += j + 1
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+1])
			i += j
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j := strings.Index(q[i+2:], "*/")
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+4])
			i += j + 3
		case c == '$' && i+1 < len(q) && q[i+1] == '$':
			j := strings.Index(q[i+2:], "$$")
			if j < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+j+4])
			i += j + 3
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			b.WriteByte('$')
			if j > i+1 {
				b.WriteString(q[i+1 : j])
				i = j - 1
			} else {
				n++
				b.WriteString(strconv.Itoa(n))
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// beginWrite begins a write transaction. On SQLite the DSN's _txlock makes
// it immediate (the file's write lock); on PostgreSQL it takes aiproxy's
// write lock, an advisory lock held until the commit, for the same effect
// across every instance: admin changes read, check and then write (a key's
// row id, an alias that must not be a host) and rely on no other writer
// running in between.
func (d *DB) beginWrite(ctx context.Context) (*sql.Tx, error) {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil || !d.pg {
		return tx, err
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", int64(pgLockWrite)); err != nil {
		tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// pgLockServe takes the serve lock on a connection of its own: shared for a
// serve (any number run together), exclusive for a rekey (none may run). It
// never waits.
func (d *DB) pgLockServe(ctx context.Context, shared bool) (release func(), err error) {
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return nil, dbError(err)
	}
	fn := "pg_try_advisory_lock"
	if shared {
		fn = "pg_try_advisory_lock_shared"
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, "SELECT "+fn+"(?)", int64(pgLockServe)).Scan(&ok); err != nil {
		conn.Close()
		return nil, dbError(err)
	}
	if !ok {
		conn.Close()
		if shared {
			return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "a rekey is running on %s: start serve when it is done", d.path)
		}
		return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "aiproxy serve is running on %s", d.path)
	}
	return func() {
		// Closing the connection would keep it, and the lock, in the pool.
		conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock_all()")
		conn.Close()
	}, nil
}

// pgTryLock takes the session advisory lock id on a connection of its own,
// without waiting: ok is false when another session holds it. unlock
// releases it and the connection.
func (d *DB) pgTryLock(ctx context.Context, id int64) (unlock func(), ok bool, err error) {
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return nil, false, dbError(err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(?)", id).Scan(&ok); err != nil || !ok {
		conn.Close()
		return nil, false, dbError(err)
	}
	return func() {
		// Closing would keep the connection, and the lock, in the pool.
		conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", id)
		conn.Close()
	}, true, nil
}
