// Package store is the only package that speaks SQL. It keeps users,
// provider keys and usage records in one SQLite file (modernc.org/sqlite, so
// builds need no cgo) or, for several instances of serve, in one PostgreSQL
// database (pgx; postgres.go), and hides that choice behind methods named
// for what they do.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/aiproxy/aiproxy/db"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/audit"
)

// BusyTimeout is how long a write waits for another process's write lock
// before it gives up with EUNAVAILABLE.
const BusyTimeout = 5 * time.Second

// DB is an open aiproxy database.
type DB struct {
	sql *sql.DB
	// forgotten is how many provider keys Open deleted (forget.go).
	forgotten int64
	path      string
	// real is path with every symbolic link resolved: the lock and the
	// key file are named after it, so that two names of one file share them.
	real  string
	log   *slog.Logger
	cache *cache
	ckpt  checkpointer
	// sealer seals and opens provider keys; Rekey replaces it.
	sealer atomic.Pointer[sealer]

	// The lookups a cache miss costs, prepared once on the pool instead of
	// parsed and planned on every call.
	userByKeyHashStmt  *sql.Stmt
	providerByHostStmt *sql.Stmt

	// pg is set for a PostgreSQL database (path is then its DSN with
	// host and database only); pgPassword is kept to scrub it from errors.
	pg         bool
	pgPassword string
	// pgCfg is the DSN's connection settings, for the listener
	// (pg_listen.go) that ClaimServer starts with watchOpts; stopWatch
	// stops it.
	pgCfg     *pgconn.Config
	watchOpts WatchOptions
	watchMu   sync.Mutex
	stopWatch func()
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date. A missing folder is created with mode 0700 and a new
// file with mode 0600; an existing file (and its -wal and -shm) that others
// may read is tightened to 0600, with a warning logged (WithLogger). A
// database written by a newer aiproxy is refused.
//
// Provider keys are sealed under a secret kept outside the database: the
// one given by WithSecretKey or WithSecretKeyFile, else the key file beside
// the database (KeyFile), created on first use. Keys stored in clear by an
// older aiproxy are sealed here. A secret that cannot unseal the stored keys
// is refused (EINVALID), and the database is left as it was.
//
// A path that is a postgres:// or postgresql:// DSN opens that PostgreSQL
// database instead (postgres.go), which needs WithSecretKey or
// WithSecretKeyFile: no key file is made beside a DSN.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	return open(ctx, path, BusyTimeout, opts...)
}

// Option configures Open.
type Option func(*options)

type options struct {
	log    *slog.Logger
	secret secretSource
	forget bool // WithForgottenProviderKeys
	watch  WatchOptions
}

// WithWatchOptions tunes, on PostgreSQL, the listener that ClaimServer
// starts and how long cached keys outlive an outage (pg_listen.go).
// SQLite ignores it.
func WithWatchOptions(w WatchOptions) Option {
	return func(o *options) { o.watch = w }
}

// WithLogger makes Open log its warnings (a database file readable by
// others, tightened; clear provider keys sealed; their scrubbing failed)
// to l. Without it they are dropped.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// SetLogger sends d's log lines to l from now on. serve opens the store
// with a logger that holds its lines back until serve's first line is out,
// then hands over its own with this, before ClaimServer starts the
// listener, which logs an outage of PostgreSQL and its end.
func (d *DB) SetLogger(l *slog.Logger) {
	d.log = l
	if d.cache != nil {
		d.cache.mu.Lock()
		d.cache.log = l
		d.cache.mu.Unlock()
	}
}

// open is Open with a chosen busy timeout, so that tests of a held write
// lock need not wait BusyTimeout.
func open(ctx context.Context, path string, busyTimeout time.Duration, opts ...Option) (*DB, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "database path is empty")
	}
	if IsPostgres(path) {
		return openPostgres(ctx, path, o)
	}
	if strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "database path %q must be a plain file path, without file:, ? or #", path)
	}
	if err := prepareFile(path); err != nil {
		return nil, err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "database path %s: %v", path, unwrapPathError(err))
	}
	if real, err = filepath.Abs(real); err != nil {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "database path %s: %v", path, err)
	}
	tightenModes(real, o.log)
	dsn := real + "?_pragma=busy_timeout(" + fmt.Sprint(busyTimeout.Milliseconds()) + ")" +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)" +
		"&_pragma=journal_size_limit(67108864)&_txlock=immediate"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open db %s: %w", path, err)
	}
	d := &DB{sql: sdb, path: path, real: real, log: o.log}
	d.ckpt = checkpointer{after: IdleCheckpoint, busyTimeout: busyTimeout, run: d.checkpointTruncate}
	if err := d.migrate(ctx, busyTimeout); err != nil {
		sdb.Close()
		return nil, openError(path, err)
	}
	if err := checkWritable(ctx, sdb, busyTimeout); err != nil {
		sdb.Close()
		return nil, openError(path, err)
	}
	if o.forget {
		if err := d.forgetProviderKeys(ctx); err != nil {
			sdb.Close()
			return nil, openError(path, err)
		}
	}
	if err := d.openSecret(ctx, o.secret); err != nil {
		sdb.Close()
		return nil, openError(path, err)
	}
	if err := d.prepare(ctx); err != nil {
		d.closeStmts()
		sdb.Close()
		return nil, openError(path, err)
	}
	if d.cache, err = newCache(ctx, sdb, true); err != nil {
		d.closeStmts()
		sdb.Close()
		return nil, openError(path, err)
	}
	return d, nil
}

// tightenModes makes the database file, its -wal and its -shm readable by
// their owner only, as a file made by an older aiproxy, copied with cp or
// restored from a backup may not be. SQLite gives a new -wal and -shm the
// database file's mode, so the main file matters most. It logs a warning
// for each file it changes or cannot change; Open goes on either way.
func tightenModes(path string, log *slog.Logger) {
	if runtime.GOOS == "windows" {
		return // no Unix modes: the folder's ACL decides
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		mode := fi.Mode().Perm() & 0o700 // 0644 → 0600; a read-only 0444 stays read-only
		if err := os.Chmod(p, mode); err != nil {
			log.Warn("database file is readable by others and its mode cannot be changed",
				"file", p, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()), "err", unwrapPathError(err))
			continue
		}
		log.Warn("database file was readable by others: mode tightened",
			"file", p, "was", fmt.Sprintf("%#o", fi.Mode().Perm()), "now", fmt.Sprintf("%#o", mode))
	}
}

// prepareFile refuses a directory, creates the parent folder (0700) and an
// empty file (0600) so that SQLite and its -wal/-shm files inherit the mode.
func prepareFile(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return aiproxy.Errorf(aiproxy.EINVALID, "database path %s is a directory", path)
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return aiproxy.Errorf(aiproxy.EINVALID, "database path %s: %v", path, unwrapPathError(err))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return aiproxy.Errorf(aiproxy.EINVALID, "create database folder: %v", unwrapPathError(err))
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // another process created it first
		}
		return aiproxy.Errorf(aiproxy.EINVALID, "create database %s: %v", path, unwrapPathError(err))
	}
	return f.Close()
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkWritable fails with SQLITE_READONLY when this process cannot write
// the database. SQLite opens a file it may not write (permissions, a
// read-only mount, a read-only -wal) read-only without a word, and even
// BEGIN IMMEDIATE succeeds there in WAL mode; without this check serve would
// start and then fail every write. So it writes page 1 (user_version, to
// its own value) in a transaction it rolls back, which asks SQLite itself
// whatever the cause. It never waits: busy_timeout is 0 on this connection
// meanwhile, and a write lock held by another process is taken as proof
// enough that the file is writable.
func checkWritable(ctx context.Context, sdb *sql.DB, busyTimeout time.Duration) error {
	conn, err := sdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var version int64
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = 0"); err != nil {
		return err
	}
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	switch {
	case err == nil:
		_, err = conn.ExecContext(ctx, "PRAGMA user_version = "+fmt.Sprint(version))
		if _, rerr := conn.ExecContext(ctx, "ROLLBACK"); err == nil {
			err = rerr
		}
	case sqliteCode(err)&0xff == sqlite3.SQLITE_BUSY:
		err = nil
	}
	// The connection goes back to the pool: restore its busy timeout, or
	// fail the open so that the pool is closed with it.
	if _, rerr := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+fmt.Sprint(busyTimeout.Milliseconds())); err == nil {
		err = rerr
	}
	return err
}

// openError turns driver errors met while opening into one clear line.
func openError(path string, err error) error {
	var ae *aiproxy.Error
	if errors.As(err, &ae) {
		return err
	}
	switch sqliteCode(err) & 0xff {
	case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
		return aiproxy.Errorf(aiproxy.EINVALID, "database %s is not an aiproxy database or is corrupt", path)
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database %s cannot be written (read-only file or folder?)", path)
	case sqlite3.SQLITE_BUSY:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database %s is locked by another process", path)
	case sqlite3.SQLITE_FULL:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "disk full: cannot write database %s", path)
	}
	return fmt.Errorf("open db %s: %w", path, err)
}

// prepare prepares the statements of the per-request lookups.
func (d *DB) prepare(ctx context.Context) error {
	var err error
	if d.userByKeyHashStmt, err = d.sql.PrepareContext(ctx,
		"SELECT "+userColumns+" FROM users WHERE key_hash = ?"); err != nil {
		return err
	}
	d.providerByHostStmt, err = d.sql.PrepareContext(ctx, providerQuery+" WHERE p.host = ? ORDER BY k.id")
	return err
}

// closeStmts closes the statements prepare made.
func (d *DB) closeStmts() {
	for _, s := range []*sql.Stmt{d.userByKeyHashStmt, d.providerByHostStmt} {
		if s != nil {
			s.Close()
		}
	}
}

// Path is the database file's path, or for PostgreSQL its DSN's host and
// database (RedactDSN), which may be shown.
func (d *DB) Path() string { return d.path }

// IsPostgres reports whether d is a PostgreSQL database.
func (d *DB) IsPostgres() bool { return d.pg }

// ClaimServer takes the lock that marks the one `serve` process of this
// database, held until release is called or the process dies. A second
// claim, from any process, fails at once with ECONFLICT, also through
// another name of the same file (a symbolic link): the lock file is named
// after the database's real path. A claim also fails (EINVALID) when a
// rekey has changed the secret since Open.
//
// On PostgreSQL any number of serve processes share the database: the claim
// is a shared advisory lock, held on a connection of its own, which only
// keeps a rekey (which takes it exclusively) from running meanwhile. The
// claim also starts the listener that keeps the cache of users and
// providers current without a query per lookup, and lets cached keys be
// served through an outage of the database for a bounded time
// (pg_listen.go); release stops it.
func (d *DB) ClaimServer() (release func(), err error) {
	if d.pg {
		release, err = d.pgLockServe(context.Background(), true)
	} else {
		release, err = lockServer(d.real+".lock", d.path)
	}
	if err != nil {
		return nil, err
	}
	// Rekey takes the same lock: once it is held, no rekey can run, and one
	// that ran since Open shows here.
	s := d.sealer.Load()
	if err := checkSecret(context.Background(), d.sql, s.key); err != nil {
		release()
		if errors.Is(err, errWrongSecret) {
			return nil, wrongSecret(s.name)
		}
		return nil, dbError(err)
	}
	if d.pg {
		d.watchMu.Lock()
		if d.stopWatch == nil {
			d.stopWatch = d.watch(d.watchOpts)
		}
		d.watchMu.Unlock()
		unlock := release
		release = func() {
			d.unwatch()
			unlock()
		}
	}
	return release, nil
}

// unwatch stops the listener, if one runs.
func (d *DB) unwatch() {
	d.watchMu.Lock()
	defer d.watchMu.Unlock()
	if d.stopWatch != nil {
		d.stopWatch()
		d.stopWatch = nil
	}
}

// Close closes the database.
func (d *DB) Close() error {
	d.unwatch()
	d.ckpt.close()
	d.cache.close()
	d.closeStmts()
	return d.sql.Close()
}

// Ping checks that the database answers a query.
func (d *DB) Ping(ctx context.Context) error {
	var n int
	return d.sql.QueryRowContext(ctx, "SELECT 1").Scan(&n)
}

// Backup writes a consistent snapshot of the live database to dst, which
// must not exist yet.
func (d *DB) Backup(ctx context.Context, dst string) error {
	if d.pg {
		return aiproxy.Errorf(aiproxy.EINVALID, "backup copies a SQLite file; back up PostgreSQL database %s with pg_dump", d.path)
	}
	// Create dst empty, owner-only and exclusively: VACUUM INTO fills an
	// empty file, and the snapshot is never readable by others, not even
	// for a moment, nor written over a file that appeared meanwhile.
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return aiproxy.Errorf(aiproxy.ECONFLICT, "backup file %s already exists", dst)
	}
	if err != nil {
		return aiproxy.Errorf(aiproxy.EINVALID, "create backup file %s: %v", dst, unwrapPathError(err))
	}
	if err := f.Close(); err != nil {
		os.Remove(dst)
		return fmt.Errorf("backup to %s: %w", dst, err)
	}
	if _, err := d.sql.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		os.Remove(dst)
		return dbError(fmt.Errorf("backup to %s: %w", dst, err))
	}
	return nil
}

func (d *DB) migrate(ctx context.Context, busyTimeout time.Duration) error {
	names, err := migrationNames(db.Migrations, "migrations")
	if err != nil {
		return err
	}

	// Fast path, read-only: everything already applied. The first query
	// opens the first connection, whose journal_mode(WAL) pragma turns a
	// new file to WAL: SQLite answers SQLITE_BUSY at once, without its busy
	// handler, while another process does the same to the same new file.
	// Once the file is in WAL mode the pragma takes no lock.
	applied, err := appliedMigrations(ctx, d.sql)
	for wait := time.Millisecond; err != nil && sqliteCode(err)&0xff == sqlite3.SQLITE_BUSY && wait < busyTimeout; wait *= 2 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		applied, err = appliedMigrations(ctx, d.sql)
	}
	if err != nil {
		return err
	}
	if err := checkKnown(applied, names); err != nil {
		return err
	}
	if len(applied) == len(names) {
		return nil
	}

	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	// Another process may have migrated while we waited for the lock.
	applied, err = appliedMigrations(ctx, tx)
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
		if err := applyMigration(ctx, tx, db.Migrations, "migrations", name); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// migrationNames lists the migrations in dir of fsys, in the order they
// apply.
func migrationNames(fsys fs.FS, dir string) ([]string, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// applyMigration runs migration name of dir in tx and records it.
func applyMigration(ctx context.Context, tx *sql.Tx, fsys fs.FS, dir, name string) error {
	body, err := fs.ReadFile(fsys, dir+"/"+name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("apply migration %s: %w", name, err)
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
		name, time.Now().UnixMilli())
	return err
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func appliedMigrations(ctx context.Context, q queryer) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, "SELECT name FROM schema_migrations")
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return map[string]bool{}, nil
		}
		return nil, err
	}
	defer rows.Close()
	applied := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		applied[n] = true
	}
	return applied, rows.Err()
}

func checkKnown(applied map[string]bool, names []string) error {
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	for n := range applied {
		if !known[n] {
			return aiproxy.Errorf(aiproxy.EINVALID,
				"database was written by a newer aiproxy (schema %s is unknown to this version): upgrade aiproxy", n)
		}
	}
	return nil
}

// sqliteCode returns the extended SQLite result code in err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// dbError maps the SQLite errors a caller can act on to domain errors and
// leaves the rest as internal errors.
func dbError(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) || (sqliteCode(err) == 0 && (isConnError(err) || isConnLost(err))) {
		return (&DB{}).pgDBError(err)
	}
	switch sqliteCode(err) & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database is busy: another process holds its write lock, try again")
	case sqlite3.SQLITE_READONLY:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database is read-only")
	case sqlite3.SQLITE_FULL:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "disk is full: database not changed")
	case sqlite3.SQLITE_IOERR:
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database I/O error: not changed")
	}
	return err
}

func isUnique(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_UNIQUE || pgCode(err) == "23505"
}

// write runs fn in one immediate transaction and commits it, so a failure
// anywhere leaves the database as it was. An admin change named in ctx
// (pkg/audit: the transport's source, the service's action) is recorded in
// the audit log in the same transaction, or, when the change fails, as
// refused in a transaction of its own (audit.go).
func (d *DB) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var done *audit.Entry
	err := d.writeTx(ctx, func(tx *sql.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		var err error
		done, err = auditInTx(ctx, tx)
		return err
	})
	if err != nil {
		d.auditRefused(ctx, err)
		return err
	}
	done.Done()
	return nil
}

// writeTx runs fn in one immediate transaction and commits it, recording
// nothing in the audit log.
func (d *DB) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := d.beginWrite(ctx)
	if err != nil {
		return dbError(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return dbError(err)
	}
	if err := tx.Commit(); err != nil {
		return dbError(err)
	}
	if d.pg && d.cache != nil {
		// This instance's own next lookup reads the version again, without
		// waiting for the notification of this commit to come back.
		d.cache.notified()
	}
	return nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func nullMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}
