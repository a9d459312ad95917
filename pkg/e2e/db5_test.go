//go:build unix

package e2e_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDB5_DiskFull: with the database on a full file system, admin writes
// fail (a one-line CLI error, a 5xx JSON answer) and never report success,
// proxying with existing keys keeps working, and once space is freed writes
// work again without a restart and no usage record is lost
// (RELIABILITY.md DB-5).
func TestDB5_DiskFull(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	dir := tmpfs(t, "4m")
	e := newEnvAt(t, filepath.Join(dir, "aiproxy.db"))
	alice := e.createUser("alice")
	srv := e.serve("--access-token", adminToken)
	mustProxy(t, srv.addr, alice)
	d := openRaw(t, e.db)
	if !poll(10*time.Second, func() bool { return queryInt(t, d, "SELECT COUNT(*) FROM usage") == 1 }) {
		t.Fatalf("the first usage row was not written")
	}
	// Empty the WAL, so that any write needs new blocks on the full disk.
	var busy, logFrames, done int
	if err := d.QueryRowContext(t.Context(), "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil || busy != 0 {
		t.Fatalf("wal_checkpoint(TRUNCATE) = busy %d, %v", busy, err)
	}
	filler := fill(t, dir)

	r := e.cli("user", "create", "bob")
	wantOneLineError(t, r, "disk")
	h := adminRegister(t, srv.addr, "carol")
	if h.status < 500 {
		t.Errorf("POST /admin/register on a full disk = %d %q, want 5xx", h.status, h.body)
	}
	wantErrorJSON(t, "POST /admin/register on a full disk", h)
	const n = 20
	for range n {
		mustProxy(t, srv.addr, alice)
	}
	if got := queryInt(t, d, "SELECT COUNT(*) FROM users WHERE name IN ('bob', 'carol')"); got != 0 {
		t.Errorf("%d of the users whose creation failed on a full disk exist", got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	bob := e.createUser("bob")
	mustProxy(t, srv.addr, bob)
	if h := adminRegister(t, srv.addr, "carol"); h.status != http.StatusOK {
		t.Errorf("POST /admin/register after space was freed = %d %q, want 200", h.status, h.body)
	}
	want := int64(1 + n + 1)
	if !poll(20*time.Second, func() bool { return queryInt(t, d, "SELECT COUNT(*) FROM usage") >= want }) {
		t.Errorf("usage rows after space was freed = %d, want %d: records written during the full disk were lost",
			queryInt(t, d, "SELECT COUNT(*) FROM usage"), want)
	}
	if got := integrity(t, e.db); got != "ok" {
		t.Errorf("integrity_check = %q, want ok", got)
	}
	if lines := srv.logged("usage records lost", "usage record dropped"); len(lines) > 0 {
		t.Errorf("serve lost usage records: %s", lines[0])
	}
	if srv.exited() {
		t.Errorf("serve exited:\n%s", srv.logs)
	}
	t.Logf("DB-5 full disk: user create → %q after %v; admin register → %d %s",
		strings.TrimSpace(r.stderr), r.dur.Round(time.Millisecond), h.status, strings.TrimSpace(h.body))
}

// wantRefused checks that serve and user create on db exit non-zero with
// one line naming the problem (want, lower case), and that serve does so
// at startup.
func wantRefused(t *testing.T, e *env, db string, want string, cred *syscall.Credential) {
	t.Helper()
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:0", "--log-format", "json"},
		{"user", "create", "dave"},
	} {
		cmd := exec.Command(e.bin, append([]string{"--db", db}, args...)...)
		cmd.Env = processEnv()
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		orphanProof(cmd)
		r := runUntil(t, cmd, 10*time.Second)
		wantOneLineError(t, r, want)
		t.Logf("%s → %q", args[0], strings.TrimSpace(r.stderr))
	}
}

// listFiles returns the names in dir.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestDB5_UnwritableAtStartup: a database that cannot be written (a
// read-only mount, with or without the -wal and -shm of a crashed serve, a
// missing folder there, or a file its user may not write) makes serve
// refuse to start and user create fail, each with one clear line, and
// nothing is created elsewhere (RELIABILITY.md DB-5).
func TestDB5_UnwritableAtStartup(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	needRoot(t)
	t.Run("read-only mount", func(t *testing.T) {
		e := newEnv(t)
		e.createUser("alice")
		ro := readOnlyView(t, e.dir)
		before := listFiles(t, e.dir)
		wantRefused(t, e, filepath.Join(ro, "aiproxy.db"), "read-only", nil)
		if after := listFiles(t, e.dir); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("files %v became %v", before, after)
		}
	})
	t.Run("read-only mount after a crash", func(t *testing.T) {
		e := newEnv(t)
		e.createUser("alice")
		srv := e.serve()
		e.createUser("bob")
		srv.kill9()
		if fileSize(e.db+"-wal") == 0 || fileSize(e.db+"-shm") == 0 {
			t.Fatalf("no -wal/-shm after kill -9: %v", listFiles(t, e.dir))
		}
		ro := readOnlyView(t, e.dir)
		wantRefused(t, e, filepath.Join(ro, "aiproxy.db"), "read-only", nil)
	})
	t.Run("missing folder on a read-only mount", func(t *testing.T) {
		e := newEnv(t)
		ro := readOnlyView(t, e.dir)
		wantRefused(t, e, filepath.Join(ro, "new", "aiproxy.db"), "read-only", nil)
	})
	t.Run("file its user may not write", func(t *testing.T) {
		e := newEnv(t)
		e.createUser("alice")
		srv := e.serve()
		e.createUser("bob")
		srv.kill9() // leave -wal and -shm, and the lock file, as a crash would
		nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
		// nobody must reach the binary and own the data folder.
		pub, err := os.MkdirTemp("", "aiproxy-e2e-pub-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(pub) })
		bin := filepath.Join(pub, "aiproxy")
		copyFile(t, e.bin, bin, 0o755)
		data := filepath.Join(pub, "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range listFiles(t, e.dir) {
			copyFile(t, filepath.Join(e.dir, name), filepath.Join(data, name), 0o600)
		}
		for _, p := range append([]string{pub}, data) {
			if p == pub {
				os.Chmod(p, 0o755)
				continue
			}
			chownAll(t, p, 65534)
		}
		db := filepath.Join(data, "aiproxy.db")
		ne := *e
		ne.bin = bin
		// Control: writable, nobody can serve it.
		cmd := exec.Command(bin, "--db", db, "user", "create", "erin")
		cmd.Env = processEnv()
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		orphanProof(cmd)
		if r := runUntil(t, cmd, 10*time.Second); r.code != 0 {
			t.Fatalf("control: %v, want exit 0", r)
		}
		if err := os.Chmod(db, 0o400); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, &ne, db, "cannot be written", nobody)
	})
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func chownAll(t *testing.T, dir string, uid int) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}
