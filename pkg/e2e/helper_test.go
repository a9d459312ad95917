//go:build unix

package e2e_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
)

// runHelper runs the test binary as a helper process. Modes:
//
//	lockhold  open AIPROXY_E2E_DB, BEGIN IMMEDIATE, print "locked", hold the
//	          write lock until stdin closes, then roll back and exit
//	upstream  serve a fakeai upstream on each address of AIPROXY_E2E_ADDRS
//	          (comma-separated), print "listening A1,A2,…", serve until
//	          stdin closes
func runHelper(mode string) int {
	switch mode {
	case "lockhold":
		if err := holdLock(os.Getenv("AIPROXY_E2E_DB")); err != nil {
			fmt.Fprintln(os.Stderr, "lockhold:", err)
			return 1
		}
		return 0
	case "upstream":
		if err := serveUpstream(strings.Split(os.Getenv("AIPROXY_E2E_ADDRS"), ",")); err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
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

// serveUpstream serves one fakeai on each of addrs until stdin closes.
func serveUpstream(addrs []string) error {
	fake := fakeai.New()
	var got []string
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		got = append(got, ln.Addr().String())
		srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	// Drain what the fake keeps per request: this process lives long.
	go func() {
		for range fake.Started {
		}
	}()
	go func() {
		for range fake.Done {
		}
	}()
	fmt.Println("listening " + strings.Join(got, ","))
	io.Copy(io.Discard, os.Stdin)
	return nil
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
	orphanProof(cmd)
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
