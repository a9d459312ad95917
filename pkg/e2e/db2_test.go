//go:build unix

package e2e_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockWords are what a "database is locked" failure looks like in an
// error line or a log.
var lockWords = []string{"locked", "busy", "sqlite_busy"}

// TestDB2_ParallelCLIWritersNoLocked: parallel CLI loops create and delete
// users while serve writes usage records for a steady stream of proxied
// requests. No command fails, and neither a command nor the server ever
// reports "database is locked" or busy (RELIABILITY.md DB-2).
func TestDB2_ParallelCLIWritersNoLocked(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	e := newEnv(t)
	loadKey := e.createUser("load")
	srv := e.serve()
	load := startLoad(srv.addr, loadKey, 8, scale.db2Rate)
	t.Cleanup(func() { load.stop() })

	start := time.Now()
	var mu sync.Mutex
	var failed []cliResult
	var durs []time.Duration
	var wg sync.WaitGroup
	for l := range scale.db2Loops {
		wg.Go(func() {
			for i := range scale.db2Ops {
				name := fmt.Sprintf("w%d_%d", l, i/2)
				args := []string{"user", "create", name}
				if i%2 == 1 {
					args = []string{"user", "delete", name}
				}
				r := e.cli(args...)
				mu.Lock()
				durs = append(durs, r.dur)
				if r.code != 0 || r.stderr != "" {
					failed = append(failed, r)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	okReq, failedReq := load.stop()
	srv.stop()

	for _, r := range failed {
		t.Errorf("%v, want exit 0 and nothing on stderr", r)
	}
	if lines := srv.logged(lockWords...); len(lines) > 0 {
		t.Errorf("serve logged %d lock/busy errors, first: %s", len(lines), lines[0])
	}
	if lines := srv.logged(`"level":"error"`, `"level":"warn"`); len(lines) > 0 {
		t.Errorf("serve logged %d errors or warnings, first: %s", len(lines), lines[0])
	}
	if failedReq > 0 {
		t.Errorf("%d of %d proxied requests failed during the CLI writes, want none", failedReq, okReq+failedReq)
	}
	d := openRaw(t, e.db)
	if n := queryInt(t, d, "SELECT COUNT(*) FROM users WHERE name LIKE 'w%'"); n != int64(scale.db2Loops*(scale.db2Ops%2)) {
		t.Errorf("%d w* users left, want %d (each create was followed by its delete)", n, scale.db2Loops*(scale.db2Ops%2))
	}
	usageRows := queryInt(t, d, "SELECT COUNT(*) FROM usage")
	if usageRows != okReq {
		t.Errorf("%d usage rows after a clean stop, want one per proxied request (%d)", usageRows, okReq)
	}
	t.Logf("DB-2: %d loops × %d CLI writes in %v (p50 %v, p99 %v, max %v per command) beside %d proxied requests (%.0f/s); %d failures",
		scale.db2Loops, scale.db2Ops, elapsed.Round(time.Millisecond), percentile(durs, 0.5).Round(time.Millisecond),
		percentile(durs, 0.99).Round(time.Millisecond), percentile(durs, 1).Round(time.Millisecond),
		okReq, float64(okReq)/elapsed.Seconds(), len(failed))
	if strings.Contains(srv.logs.String(), "usage records lost") {
		t.Errorf("serve lost usage records")
	}
}
