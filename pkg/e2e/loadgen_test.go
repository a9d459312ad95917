//go:build unix

package e2e_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// loadGen sends `ok` requests through aiproxy in the background, so that
// the server writes usage records while a test does something else.
type loadGen struct {
	addr   atomic.Pointer[string] // where to send; changes when serve restarts
	ok     atomic.Int64
	failed atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startLoad starts workers goroutines sending requests with key to addr,
// rate requests per second in total (0: as fast as they can). stop (also
// in t.Cleanup via the caller) ends them.
func startLoad(addr, key string, workers, rate int) *loadGen {
	ctx, cancel := context.WithCancel(context.Background())
	g := &loadGen{cancel: cancel}
	g.setAddr(addr)
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		tick = t.C
		go func() { <-ctx.Done(); t.Stop() }()
	}
	for range workers {
		g.wg.Go(func() {
			for ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				// In-flight requests end on their own at stop, so that each
				// one that answered is counted.
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := proxiedWith(rctx, loadClient, *g.addr.Load(), key, "ok")
				rcancel()
				if err == nil && r.status == http.StatusOK {
					g.ok.Add(1)
				} else if ctx.Err() == nil {
					g.failed.Add(1)
					// serve is down or refusing: do not spin.
					select {
					case <-time.After(20 * time.Millisecond):
					case <-ctx.Done():
					}
				}
			}
		})
	}
	return g
}

func (g *loadGen) setAddr(a string) { g.addr.Store(&a) }

// stop ends the load and waits for the workers; it returns how many
// requests answered 200 and how many did not.
func (g *loadGen) stop() (ok, failed int64) {
	g.cancel()
	g.wg.Wait()
	return g.ok.Load(), g.failed.Load()
}
