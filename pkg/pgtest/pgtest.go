// Package pgtest starts a throwaway PostgreSQL cluster for tests: initdb in
// a temporary folder, a server on a free loopback port (and a unix socket in
// that folder), one new database per test, everything removed at the end.
//
// It needs Debian's postgresql package (the server under
// /usr/lib/postgresql/*/bin); without it the tests that ask for a database
// skip, saying so, unless AIPROXY_REQUIRE_POSTGRES is set (CI sets it after
// installing the package), when they fail instead. initdb and the server
// refuse to run as root, so a root test process runs them as the postgres
// user (runuser), in a folder that user owns.
//
// A package that uses it calls Main from its TestMain, so that the cluster
// stops when its tests end.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv names the environment variable that turns a missing server
// into a test failure instead of a skip.
const RequireEnv = "AIPROXY_REQUIRE_POSTGRES"

var (
	once     sync.Once
	running  *cluster
	errStart error
	dbSeq    atomic.Int64
)

type cluster struct {
	bin    string // the folder of initdb, pg_ctl
	dir    string // data, socket and log, removed by stop
	port   int
	asUser string // run the server's commands as this user ("": as ourselves)
	opts   string // the server's options, for a restart
}

// Main runs the tests of m and then stops the cluster, if one was started.
// Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if running != nil {
		running.stop()
	}
	return code
}

// Installed returns the folder of the newest installed PostgreSQL server's
// programs, or "" when there is none.
func Installed() string {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return ""
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) < version(found[j]) })
	return filepath.Dir(found[len(found)-1])
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// NewDatabase creates an empty database in the test cluster, starting the
// cluster on first use, and returns its DSN (postgres://postgres@127.0.0.1:PORT/NAME).
// The database is dropped when t ends. Without a PostgreSQL server it skips
// t (or fails it under AIPROXY_REQUIRE_POSTGRES).
func NewDatabase(t testing.TB) string {
	t.Helper()
	c := start(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return c.dsn(name)
}

// start returns the running cluster, starting it once per test binary.
func start(t testing.TB) *cluster {
	t.Helper()
	bin := installed(t)
	once.Do(func() { running, errStart = startCluster(bin, "off") })
	if errStart != nil {
		t.Fatalf("pgtest: start PostgreSQL: %v", errStart)
	}
	return running
}

// installed returns the server's folder, or skips t (fails it under
// RequireEnv) when there is none.
func installed(t testing.TB) string {
	t.Helper()
	bin := Installed()
	if bin == "" {
		msg := "pgtest: no PostgreSQL server installed (/usr/lib/postgresql/*/bin/initdb missing): apt-get install -y postgresql"
		if os.Getenv(RequireEnv) != "" {
			t.Fatal(msg + " (" + RequireEnv + " is set)")
		}
		t.Skip(msg)
	}
	return bin
}

// Cluster is a PostgreSQL server of one test's own, which the test may
// stop and start again (an outage, a restart) without disturbing the
// shared cluster of NewDatabase. Unlike that one it commits synchronously
// (synchronous_commit=on), so that a commit it acknowledged survives an
// immediate stop as it would in production.
type Cluster struct {
	c *cluster
}

// NewCluster initialises and starts a cluster for t, removed when t ends.
// Without a PostgreSQL server it skips t (or fails it under RequireEnv).
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	c, err := startCluster(installed(t), "on")
	if err != nil {
		t.Fatalf("pgtest: start PostgreSQL: %v", err)
	}
	t.Cleanup(c.stop)
	return &Cluster{c: c}
}

// NewDatabase creates an empty database in the cluster and returns its DSN.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.c.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	return c.c.dsn(name)
}

// Stop stops the server: mode "fast" (clients disconnected, a clean
// shutdown) or "immediate" (as a crash: recovery from the WAL at the next
// start).
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := c.c.run("pg_ctl", "stop", "-D", filepath.Join(c.c.dir, "data"), "-m", mode, "-w", "-t", "60"); err != nil {
		t.Fatalf("pgtest: pg_ctl stop -m %s: %v: %s", mode, err, out)
	}
}

// Start starts the stopped server again, on the same port, and waits
// until it accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.c.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

func startCluster(bin, syncCommit string) (*cluster, error) {
	dir, err := os.MkdirTemp("", "aiproxy-pg-")
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		c.asUser = "postgres"
	}
	if c.port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if out, err := c.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	// fsync off and a small footprint: a test cluster's data is thrown
	// away, and the machine does not crash under it (a stopped server's
	// commits are in the kernel's cache).
	c.opts = fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=%s "+
		"-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB", c.port, dir, syncCommit)
	if err := c.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// start starts the initialised cluster and waits until it accepts
// connections.
func (c *cluster) start() error {
	data := filepath.Join(c.dir, "data")
	if out, err := c.run("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(c.dir, "log"), "-o", c.opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v: %s %s", err, out, log)
	}
	return nil
}

// run runs one of the server's programs, as the postgres user when we are root.
func (c *cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

func (c *cluster) stop() {
	c.run("pg_ctl", "stop", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w")
	os.RemoveAll(c.dir)
}

func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// exec runs one statement on the cluster's postgres database.
func (c *cluster) exec(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, stmt)
	return err
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the server binds it; pg_ctl start then fails loudly.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("not a TCP address")
	}
	return addr.Port, nil
}
