package server_test

// Waits that rest on the order of events rather than on a pause: a test
// that must show that something did NOT happen (a probe never dialled, no
// duplicate usage row) waits until everything that could have made it
// happen is over, never for a fixed time (RELIABILITY.md section 0).

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// settled returns how many connections the probe accepted before now. A
// connection the proxy made may still sit in the listen backlog when the
// request that caused it has been answered; the probe accepts in backlog
// order, so once a sentinel connection made here has been accepted and
// closed (the probe counts before it closes), every earlier one has been
// counted too. The sentinel itself is not counted in the result.
func (p *relProbe) settled(t *testing.T) int32 {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("sentinel dial to the probe: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, not the wait
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the probe did not close the sentinel connection: %v", err)
	}
	return p.accepted.Load() - 1
}

// relQuietGoroutines waits until the goroutine count has stopped falling
// (the same count at five polls in a row) and returns it; bounded by
// timeout, after which it returns the last count.
func relQuietGoroutines(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	last, same := runtime.NumGoroutine(), 0
	for same < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		g := runtime.NumGoroutine()
		if g == last {
			same++
		} else {
			last, same = g, 0
		}
	}
	return last
}
