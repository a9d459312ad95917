//go:build unix

package e2e_test

import (
	"strings"
	"testing"
)

// TestDB4_SecondServeRefused: a second `aiproxy serve` on the same file, a
// separate process, exits non-zero at once (RELIABILITY.md says within 2 s;
// here within a few times a CLI command's run) with a one-line message, and
// the first keeps serving; CLI writers still work beside it
// (RELIABILITY.md DB-4). cmd/serve_test.go checks the same in-process.
func TestDB4_SecondServeRefused(t *testing.T) {
	e := newEnv(t)
	key := e.createUser("alice")
	first := e.serve()
	// What a CLI command that opens the file takes beside the first serve,
	// in this run: the yardstick for the second serve's refusal.
	list := e.cli("user", "list")
	if list.code != 0 {
		t.Fatalf("%v, want exit 0", list)
	}

	second := e.command("serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	r := runCmd(t, second, second.Args[1:])
	if r.code == 0 {
		t.Errorf("%v, want a non-zero exit", r)
	}
	// It gives up at once rather than waiting for the lock (the busy
	// timeout is 5 s): within a few times what `user list` took.
	if r.dur > 5*list.dur {
		t.Errorf("second serve took %v to give up, want ≤ 5 × %v (a `user list` in this run)", r.dur, list.dur)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "already running") {
		t.Errorf("second serve stderr = %q, want one line saying another serve is running", r.stderr)
	}
	mustProxy(t, first.addr, key)
	mustProxy(t, first.addr, e.createUser("bob"))
	if first.exited() {
		t.Errorf("the first serve exited:\n%s", first.logs)
	}
}
