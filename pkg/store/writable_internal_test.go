package store

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// TestCheckWritable covers what Open does to refuse a database it cannot
// write (DB-5): SQLite opens such a file read-only without an error, and
// BEGIN IMMEDIATE even succeeds on it in WAL mode. pkg/e2e checks the same
// on read-only mounts and with a file its user may not write.
func TestCheckWritable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	raw := func(t *testing.T, dsn string) *sql.DB {
		t.Helper()
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1) // so that the test sees the connection checkWritable used
		t.Cleanup(func() { db.Close() })
		return db
	}

	t.Run("read-only connection", func(t *testing.T) {
		ro := raw(t, "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
		err := checkWritable(ctx, ro, BusyTimeout)
		if got := sqliteCode(err) & 0xff; got != sqlite3.SQLITE_READONLY {
			t.Fatalf("checkWritable(read-only) error = %v, want SQLITE_READONLY", err)
		}
		if got := aiproxy.ErrorMessage(openError(path, err)); got != "database "+path+" cannot be written (read-only file or folder?)" {
			t.Errorf("openError(checkWritable(read-only)) = %q", got)
		}
	})

	t.Run("writable", func(t *testing.T) {
		rw := raw(t, path+"?_pragma=busy_timeout(5000)")
		if err := checkWritable(ctx, rw, BusyTimeout); err != nil {
			t.Fatalf("checkWritable(writable) error = %v, want nil", err)
		}
		var v, busy int64
		rw.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
		rw.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy)
		if v != 0 || busy != BusyTimeout.Milliseconds() {
			t.Errorf("after checkWritable: user_version %d, busy_timeout %d; want 0 and %d", v, busy, BusyTimeout.Milliseconds())
		}
	})

	t.Run("write lock held elsewhere", func(t *testing.T) {
		holder := raw(t, path+"?_pragma=busy_timeout(5000)")
		conn, err := holder.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		defer conn.ExecContext(ctx, "ROLLBACK")
		rw := raw(t, path+"?_pragma=busy_timeout(5000)")
		start := time.Now()
		if err := checkWritable(ctx, rw, BusyTimeout); err != nil {
			t.Errorf("checkWritable(locked elsewhere) error = %v, want nil", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("checkWritable(locked elsewhere) took %v, want no wait for the lock", el)
		}
		var busy int64
		rw.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy)
		if busy != BusyTimeout.Milliseconds() {
			t.Errorf("busy_timeout after checkWritable = %d, want it restored to %d", busy, BusyTimeout.Milliseconds())
		}
	})
}
