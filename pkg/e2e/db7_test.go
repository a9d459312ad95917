//go:build unix

package e2e_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// usersIn returns the names of the users in the database file at path.
func usersIn(t *testing.T, path string) map[string]bool {
	t.Helper()
	d, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rows, err := d.QueryContext(t.Context(), "SELECT name FROM users")
	if err != nil {
		t.Fatalf("users of %s: %v", path, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[n] = true
	}
	return out
}

// TestDB7_BackupUnderLoad: `aiproxy backup` taken while serve writes usage
// records and the CLI creates users passes integrity_check and holds every
// user created before it started; the restore procedure (stop serve, remove
// the old -wal and -shm, copy the backup in place) brings those users back
// with working keys (RELIABILITY.md DB-7).
func TestDB7_BackupUnderLoad(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	e := newEnv(t)
	loadKey := e.createUser("load")
	srv := e.serve()
	load := startLoad(srv.addr, loadKey, 4, 0)
	t.Cleanup(func() { load.stop() })
	creat := startCreator(e, "c", 200)
	t.Cleanup(creat.end)
	if !poll(30*time.Second, func() bool { return len(creat.succeeded()) >= 10 }) {
		t.Fatalf("fewer than 10 users created in 30 s")
	}

	before := creat.succeeded()
	backup := filepath.Join(t.TempDir(), "backup.db")
	r := e.cli("backup", backup)
	if r.code != 0 {
		t.Fatalf("%v, want exit 0", r)
	}
	// Writes go on after the backup, so the live -wal holds what the
	// backup lacks.
	n := len(creat.succeeded())
	poll(30*time.Second, func() bool { return len(creat.succeeded()) >= n+3 })
	creat.end()
	okReq, _ := load.stop()

	if got := integrity(t, backup); got != "ok" {
		t.Fatalf("integrity_check of the backup = %q, want ok", got)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	inBackup := usersIn(t, backup)
	for _, c := range append(before, created{name: "load"}) {
		if !inBackup[c.name] {
			t.Errorf("user %s, created before the backup started, is not in it", c.name)
		}
	}
	after := creat.succeeded()
	t.Logf("DB-7: backup taken in %v under load (%d proxied requests), %d users before it, %d in it, %d created in all",
		r.dur.Round(time.Millisecond), okReq, len(before), len(inBackup), len(after))

	// Restore: serve is stopped (here by a crash, the worst case, which
	// leaves -wal and -shm behind), the old -wal and -shm are removed, and
	// the backup is copied in place.
	srv.kill9()
	if fileSize(e.db+"-wal") == 0 {
		t.Logf("note: no -wal left after kill -9")
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(e.db + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	copyFile(t, backup, e.db, 0o600)
	srv = e.serve()
	if got := integrity(t, e.db); got != "ok" {
		t.Fatalf("integrity_check after the restore = %q, want ok", got)
	}
	checkKeys(t, srv.addr, before, "after the restore")
	restored := usersIn(t, e.db)
	for _, c := range after[len(before):] {
		if restored[c.name] && !inBackup[c.name] {
			t.Errorf("user %s, not in the backup, is in the restored database: a stale -wal was applied", c.name)
		}
	}
}

// TestDB7_CopyingTheFileLosesWAL documents why a backup must not be a copy
// of the live file: commits still in the -wal are not in the main file, so
// `cp aiproxy.db` while serve runs loses them (RELIABILITY.md DB-7).
func TestDB7_CopyingTheFileLosesWAL(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	e := newEnv(t)
	e.createUser("old")
	srv := e.serve()
	// Checkpoint everything so far: the main file holds "old".
	d := openRaw(t, e.db)
	var busy, logFrames, done int
	if err := d.QueryRowContext(t.Context(), "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil || busy != 0 {
		t.Fatalf("wal_checkpoint(TRUNCATE) = busy %d, %v", busy, err)
	}
	// No SQLite connection of this process may stay open on the file while
	// it is opened and closed by hand: closing any descriptor of a file
	// drops the process's POSIX locks on it, SQLite's too.
	d.Close()
	key := e.createUser("recent") // committed to the -wal only
	mustProxy(t, srv.addr, key)

	copied := filepath.Join(t.TempDir(), "copy.db")
	copyFile(t, e.db, copied, 0o600)
	got := usersIn(t, copied)
	if !got["old"] || got["recent"] {
		t.Errorf("users in a cp of the live file = %v, want old but not recent (whose commit is still in the -wal)", got)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	e.mustCLI("backup", backup)
	if got := usersIn(t, backup); !got["old"] || !got["recent"] {
		t.Errorf("users in `aiproxy backup` = %v, want old and recent", got)
	}
}
