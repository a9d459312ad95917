//go:build unix

package e2e_test

import (
	"strings"
	"testing"
	"time"
)

// TestDB4_SecondServeRefused: a second `aiproxy serve` on the same file, a
// separate process, exits non-zero within 2 s with a one-line message, and
// the first keeps serving; CLI writers still work beside it
// (RELIABILITY.md DB-4). cmd/serve_test.go checks the same in-process.
func TestDB4_SecondServeRefused(t *testing.T) {
	e := newEnv(t)
	key := e.createUser("alice")
	first := e.serve()

	second := e.command("serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	r := runCmd(t, second, second.Args[1:])
	if r.code == 0 {
		t.Errorf("%v, want a non-zero exit", r)
	}
	if r.dur > 2*time.Second {
		t.Errorf("second serve took %v to give up, want ≤ 2 s", r.dur)
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
