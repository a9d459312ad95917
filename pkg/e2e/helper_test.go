package e2e_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runHelper runs the test binary as a helper process. Modes:
//
//	lockhold  open AIPROXY_E2E_DB, BEGIN IMMEDIATE, print "locked", hold the
//	          write lock until stdin closes, then roll back and exit
func runHelper(mode string) int {
	switch mode {
	case "lockhold":
		if err := holdLock(os.Getenv("AIPROXY_E2E_DB")); err != nil {
			fmt.Fprintln(os.Stderr, "lockhold:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", helperEnv, mode)
	return 2
}

func holdLock(path string) error {
	ctx := context.Background()
	d, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer d.Close()
	conn, err := d.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin) // until the test closes our stdin (or dies)
	_, err = conn.ExecContext(ctx, "ROLLBACK")
	return err
}

// lockHolder is another process holding the database's write lock.
type lockHolder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
}

// holdWriteLock starts a process that holds BEGIN IMMEDIATE on path and
// returns once it holds it. release (also run in t.Cleanup) ends it.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=lockhold", "AIPROXY_E2E_DB="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &lockHolder{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	locked := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		locked <- line
		io.Copy(io.Discard, stdout)
		h.done <- cmd.Wait()
	}()
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		stdin.Close()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("lock holder: %v: %s", err, stderr.String())
			}
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			t.Errorf("lock holder did not exit within %v of release", stopTimeout)
		}
	}
	t.Cleanup(release)
	select {
	case line := <-locked:
		if strings.TrimSpace(line) != "locked" {
			release()
			t.Fatalf("lock holder said %q, want locked; stderr %s", line, stderr.String())
		}
	case <-time.After(startTimeout):
		cmd.Process.Kill()
		t.Fatalf("lock holder did not take the lock within %v", startTimeout)
	}
	return release
}
