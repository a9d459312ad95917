//go:build unix

package e2e_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// posixLock is one line of /proc/locks.
type posixLock struct {
	kind       string // READ or WRITE
	pid        int
	inode      uint64
	start, end string
}

// locksOf returns the POSIX locks pid holds on path, from /proc/locks.
func locksOf(t *testing.T, pid int, path string) []posixLock {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		t.Skipf("skipped: no /proc/locks: %v", err)
	}
	defer f.Close()
	var out []posixLock
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "2: POSIX  ADVISORY  READ 29484 fe:00:9979119 128 128"
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 || fs[1] != "POSIX" {
			continue
		}
		p, _ := strconv.Atoi(fs[4])
		dev := strings.Split(fs[5], ":")
		ino, _ := strconv.ParseUint(dev[len(dev)-1], 10, 64)
		if p == pid && ino == st.Ino {
			out = append(out, posixLock{kind: fs[3], pid: p, inode: ino, start: fs[6], end: fs[7]})
		}
	}
	return out
}

// TestDB1_ServeKeepsItsSQLiteLocks: serve holds the locks SQLite's
// multi-process safety rests on, for as long as it runs: a read lock on
// the -shm file's DMS byte (128), which tells every other process that the
// wal-index is in use, and a SHARED lock on the database file. POSIX locks
// belong to the process, and close(2) of any descriptor of a file drops
// all of them, so code that opens and closes the database or its -shm
// beside SQLite (to stat, copy or mmap it) silently drops SQLite's: the next
// CLI process then takes the -shm for its own, truncates and rebuilds it
// under serve, and writes fail with I/O errors or read stale pages
// (RELIABILITY.md DB-1, DB-2; Linux only, from /proc/locks).
func TestDB1_ServeKeepsItsSQLiteLocks(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	e := newEnv(t)
	key := e.createUser("alice")
	srv := e.serve()
	pid := srv.cmd.Process.Pid
	check := func(when string) {
		t.Helper()
		shm := locksOf(t, pid, e.db+"-shm")
		if !hasLock(shm, "READ", "128", "128") {
			t.Errorf("%s: serve's locks on the -shm = %v, want a READ lock on byte 128 (DMS)", when, shm)
		}
		if db := locksOf(t, pid, e.db); len(db) == 0 {
			t.Errorf("%s: serve holds no lock on the database file, want its SHARED lock", when)
		}
	}
	check("after startup")
	mustProxy(t, srv.addr, key)
	mustProxy(t, srv.addr, e.createUser("bob"))
	e.mustCLI("user", "list")
	check("after requests and CLI commands")
}

func hasLock(ls []posixLock, kind, start, end string) bool {
	for _, l := range ls {
		if l.kind == kind && l.start == start && l.end == end {
			return true
		}
	}
	return false
}

func (l posixLock) String() string { return fmt.Sprintf("%s %s-%s", l.kind, l.start, l.end) }
