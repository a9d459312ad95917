package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// CopyTo is `aiproxy migrate` (CONTRACT section 8): it copies every row of
// d, a SQLite database, into dst, an empty PostgreSQL one, in one
// transaction on dst. Every table the two schemas share is copied whole,
// with its ids, so that references (usage and limits to users, keys to
// providers) hold; provider keys are opened under d's secret and sealed
// again under dst's; the identity sequences are then set past the highest
// id SQLite ever gave (sqlite_sequence), so that a deleted user's id, which
// old usage rows still carry, is never given to a new one. dst's triggers
// are off while the rows go in: the daily totals are copied as they are,
// not counted twice, and the keys' states and providers' versions stay as
// they were.
//
// A dst holding any row is refused (ECONFLICT) and left as it was; so is a
// d that a serve holds (ECONFLICT): usage it wrote after the copy would be
// lost. It returns the rows copied per table, in the order copied.
func (d *DB) CopyTo(ctx context.Context, dst *DB) ([]TableRows, error) {
	if d.pg || !dst.pg {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "migrate copies a SQLite database into a PostgreSQL one")
	}
	release, err := lockServer(d.real+".lock", d.path)
	if aiproxy.ErrorCode(err) == aiproxy.ECONFLICT {
		return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "aiproxy serve is running on %s: stop it before migrate (usage it writes after the copy would be lost)", d.path)
	}
	if err != nil {
		return nil, err
	}
	defer release()

	src, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return nil, dbError(err)
	}
	defer src.Rollback()
	tx, err := dst.beginWrite(ctx)
	if err != nil {
		return nil, dst.pgOpenError(err)
	}
	defer tx.Rollback()

	tables, err := sqliteTables(ctx, src)
	if err != nil {
		return nil, err
	}
	target, err := pgColumns(ctx, tx)
	if err != nil {
		return nil, err
	}
	var full []string
	for t := range target {
		if t == "schema_migrations" || t == "auth_version" {
			continue
		}
		var some bool
		if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+quoteIdent(t)+")").Scan(&some); err != nil {
			return nil, err
		}
		if some {
			full = append(full, t)
		}
	}
	if len(full) > 0 {
		slices.Sort(full)
		return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "database %s is not empty (rows in %s): migrate copies only into an empty database",
			dst.path, strings.Join(full, ", "))
	}
	for _, t := range tables {
		if target[t] == nil {
			return nil, aiproxy.Errorf(aiproxy.EINVALID, "database %s has no table %s: is it an older aiproxy's? (%s has it)", dst.path, t, d.path)
		}
		if _, err := tx.ExecContext(ctx, "ALTER TABLE "+quoteIdent(t)+" DISABLE TRIGGER USER"); err != nil {
			return nil, fmt.Errorf("migrate: turn off the triggers of %s while copying: %w", t, err)
		}
	}

	var out []TableRows
	for _, t := range tables {
		n, err := d.copyTable(ctx, src, tx, dst, t, target[t])
		if err != nil {
			return nil, fmt.Errorf("migrate: copy %s: %w", t, err)
		}
		out = append(out, TableRows{Table: t, Rows: n})
	}
	for _, t := range tables {
		if _, err := tx.ExecContext(ctx, "ALTER TABLE "+quoteIdent(t)+" ENABLE TRIGGER USER"); err != nil {
			return nil, err
		}
	}
	if err := resetSequences(ctx, src, tx); err != nil {
		return nil, fmt.Errorf("migrate: reset identity sequences: %w", err)
	}
	// Any instance already serving dst reloads what it cached.
	if _, err := tx.ExecContext(ctx, "UPDATE auth_version SET v = v + 1 WHERE id = 1"); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, dst.pgDBError(err)
	}
	return out, nil
}

// TableRows is how many rows CopyTo copied into one table.
type TableRows struct {
	Table string
	Rows  int64
}

// copyOrder puts the tables that others reference first.
var copyOrder = []string{"users", "providers", "provider_keys"}

// sqliteTables lists the source's tables to copy: every one but SQLite's
// own, the migrations' bookkeeping and the auth version counter, referenced
// ones first.
func sqliteTables(ctx context.Context, q queryer) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name NOT IN ('schema_migrations', 'auth_version') ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(names, func(a, b string) int {
		ia, ib := slices.Index(copyOrder, a), slices.Index(copyOrder, b)
		if ia < 0 {
			ia = len(copyOrder)
		}
		if ib < 0 {
			ib = len(copyOrder)
		}
		return ia - ib
	})
	return names, nil
}

// pgColumns maps each table of the target's schema to its columns.
func pgColumns(ctx context.Context, tx *sql.Tx) (map[string]map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT c.table_name, c.column_name FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[string]bool{}
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			return nil, err
		}
		if out[t] == nil {
			out[t] = map[string]bool{}
		}
		out[t][c] = true
	}
	return out, rows.Err()
}

// copyTable copies table t from src to tx in multi-row INSERTs, sealing
// provider keys again under dst's secret.
func (d *DB) copyTable(ctx context.Context, src, tx *sql.Tx, dst *DB, t string, target map[string]bool) (int64, error) {
	cols, err := sqliteColumns(ctx, src, t)
	if err != nil {
		return 0, err
	}
	for _, c := range cols {
		if !target[c] {
			return 0, aiproxy.Errorf(aiproxy.EINVALID, "the target has no column %s.%s", t, c)
		}
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
	}
	list := strings.Join(quoted, ", ")
	secretAt, idAt := slices.Index(cols, "secret"), slices.Index(cols, "id")
	var hosts map[int64]string // provider_keys: the provider of each key
	if t == "provider_keys" {
		if secretAt < 0 || idAt < 0 {
			return 0, aiproxy.Errorf(aiproxy.EINVALID, "provider_keys has no id or secret column")
		}
		if hosts, err = keyHosts(ctx, src); err != nil {
			return 0, err
		}
	}
	from, to := d.sealer.Load(), dst.sealer.Load()

	rows, err := src.QueryContext(ctx, "SELECT "+list+" FROM "+quoteIdent(t))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	perBatch := max(1, min(500, 60000/len(cols)))
	var batch []any
	var n, inBatch int64
	flush := func() error {
		if inBatch == 0 {
			return nil
		}
		one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
		q := "INSERT INTO " + quoteIdent(t) + " (" + list + ") VALUES " +
			strings.TrimSuffix(strings.Repeat(one+", ", int(inBatch)), ", ")
		if _, err := tx.ExecContext(ctx, q, batch...); err != nil {
			return err
		}
		batch, inBatch = batch[:0], 0
		return nil
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, err
		}
		if hosts != nil {
			id, _ := vals[idAt].(int64)
			sealed, ok := vals[secretAt].([]byte)
			if !ok {
				return 0, aiproxy.Errorf(aiproxy.EINVALID, "provider key %d is not sealed", id)
			}
			ad := keyAD(hosts[id], id)
			plain, err := from.key.Open(sealed, ad)
			if err != nil {
				return 0, wrongSecret(from.name)
			}
			vals[secretAt] = to.key.Seal(plain, ad)
		}
		batch = append(batch, vals...)
		inBatch++
		n++
		if inBatch >= int64(perBatch) {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return n, flush()
}

func sqliteColumns(ctx context.Context, q queryer, t string) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT name FROM pragma_table_info(?) ORDER BY cid", t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func keyHosts(ctx context.Context, q queryer) (map[int64]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT k.id, p.host FROM provider_keys k JOIN providers p ON p.id = k.provider_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var host string
		if err := rows.Scan(&id, &host); err != nil {
			return nil, err
		}
		out[id] = host
	}
	return out, rows.Err()
}

// resetSequences sets each identity sequence of the target so that its
// next id is past both the highest copied id and the highest SQLite ever
// gave that table (AUTOINCREMENT never reuses one).
func resetSequences(ctx context.Context, src, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_identity = 'YES'`)
	if err != nil {
		return err
	}
	var idents [][2]string
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return err
		}
		idents = append(idents, [2]string{t, c})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var hasSeq bool
	if err := src.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')").Scan(&hasSeq); err != nil {
		return err
	}
	for _, ic := range idents {
		var top int64
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX("+quoteIdent(ic[1])+"), 0) FROM "+quoteIdent(ic[0])).Scan(&top); err != nil {
			return err
		}
		if hasSeq {
			var seq sql.NullInt64
			if err := src.QueryRowContext(ctx, "SELECT MAX(seq) FROM sqlite_sequence WHERE name = ?", ic[0]).Scan(&seq); err != nil {
				return err
			}
			top = max(top, seq.Int64)
		}
		if top == 0 {
			continue // untouched: the next id is 1
		}
		if _, err := tx.ExecContext(ctx, "SELECT setval(pg_get_serial_sequence(?, ?), ?, true)",
			quoteIdent(ic[0]), ic[1], top); err != nil {
			return err
		}
	}
	return nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
