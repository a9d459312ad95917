package store

import (
	"database/sql"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/db"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

// TestOpen_PragmasOnEveryConnection checks that the DSN pragmas reach every
// pooled connection, not just the first one (a db.Exec("PRAGMA ...") would
// not): several connections are held at once and each is asked.
func TestOpen_PragmasOnEveryConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, err := Open(ctx, filepath.Join(t.TempDir(), "aiproxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	type pragmas struct {
		BusyTimeout int64
		JournalMode string
		ForeignKeys int
		Synchronous int
	}
	want := pragmas{BusyTimeout: BusyTimeout.Milliseconds(), JournalMode: "wal", ForeignKeys: 1, Synchronous: 1}

	const n = 4
	var wg sync.WaitGroup
	got := make([]pragmas, n)
	errs := make([]error, n)
	hold := make(chan struct{})
	var ready sync.WaitGroup
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			conn, err := d.sql.Conn(ctx)
			ready.Done()
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close()
			<-hold // keep the connection checked out so that each goroutine gets its own
			p := &got[i]
			for _, q := range []struct {
				sql  string
				dest any
			}{
				{"PRAGMA busy_timeout", &p.BusyTimeout},
				{"PRAGMA journal_mode", &p.JournalMode},
				{"PRAGMA foreign_keys", &p.ForeignKeys},
				{"PRAGMA synchronous", &p.Synchronous},
			} {
				if err := conn.QueryRowContext(ctx, q.sql).Scan(q.dest); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	ready.Wait()
	close(hold)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("connection %d: %v", i, errs[i])
			continue
		}
		if got[i] != want {
			t.Errorf("connection %d pragmas = %+v, want %+v", i, got[i], want)
		}
	}
}

// TestOpen_UpgradesFrom0001: a database that an earlier aiproxy left at
// 0001_init.sql gets 0002_auth_version.sql on open, keeps its rows, and a
// change made through another handle after the upgrade reaches serve's cache
// at once.
func TestOpen_UpgradesFrom0001(t *testing.T) {
	t.Parallel()
	SQLiteOnly(t)
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	raw, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	initSQL, err := fs.ReadFile(db.Migrations, "migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	old, next := cacheKey(1), cacheKey(2)
	for _, q := range []string{
		string(initSQL),
		"CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
		"INSERT INTO schema_migrations (name, applied_at) VALUES ('0001_init.sql', 0)",
		"INSERT INTO users (name, key_hash, key_hint, created_at) VALUES ('gina', '" + keys.Hash(old) + "', 'sk-…', 0)",
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("build a 0001 database: %v", err)
		}
	}
	raw.Close()

	fresh, _ := openPair(t) // a new database, to compare the schema with
	d, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open(0001 database) error = %v", err)
	}
	defer d.Close()
	schema := func(d *DB) []string {
		t.Helper()
		rows, err := d.sql.QueryContext(ctx,
			"SELECT type || ' ' || name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	if diff := cmp.Diff(schema(fresh), schema(d)); diff != "" {
		t.Errorf("schema of an upgraded 0001 database (-new database +upgraded):\n%s", diff)
	}
	if u, err := d.UserByKeyHash(ctx, keys.Hash(old)); err != nil || u.Name != "gina" {
		t.Fatalf("UserByKeyHash after upgrade = %+v, %v; want gina", u, err)
	}
	other, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.ResetUserKey(ctx, "gina", keys.Hash(next), keys.Hint(next), false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.UserByKeyHash(ctx, keys.Hash(old)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("UserByKeyHash(key reset elsewhere) error = %v, want EUNAUTHORIZED", err)
	}
}
