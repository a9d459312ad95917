//go:build unix

package e2e_test

import (
	"sync/atomic"
	"testing"
	"time"
)

// journalSizeLimit is the store's journal_size_limit (pkg/store): the size
// the -wal is cut back to after a checkpoint.
const journalSizeLimit = 64 << 20

// walSampler records the largest size the -wal file reaches.
type walSampler struct {
	max  atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sampleWAL(path string) *walSampler {
	s := &walSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if n := fileSize(path); n > s.max.Load() {
				s.max.Store(n)
			}
			select {
			case <-tick.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

func (s *walSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.max.Load()
}

// TestDB8_WALBounded: usage records are written at a steady rate while a
// reader in another process holds a read transaction open part of the
// time, which stops checkpoints from reaching the end of the -wal. The -wal
// never grows past the bound (journal_size_limit) + 20 %, and once the
// writes stop it is checkpointed and truncated (RELIABILITY.md DB-8).
//
// While a reader holds its snapshot the -wal can only grow, by what each
// transaction rewrites: a page of the usage table and of each index, about
// 16 KiB. The recorder's Linger (pkg/usage) makes that one transaction per
// 100 ms instead of one per request, which keeps a 60 s read within the
// bound at a few hundred requests a second; store.IdleCheckpoint truncates
// the file once the writes pause.
func TestDB8_WALBounded(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	e := newEnv(t)
	key := e.createUser("load")
	srv := e.serve()
	wal := e.db + "-wal"
	sampler := sampleWAL(wal)
	t.Cleanup(func() { sampler.end() })

	load := startLoad(srv.addr, key, 8, scale.db8Rate)
	t.Cleanup(func() { load.stop() })

	// The reader: BEGIN, a read that pins its snapshot, then hold.
	d := openRaw(t, e.db)
	ctx := t.Context()
	var holds []string
	var growth []float64 // -wal bytes per second while a reader held
	start := time.Now()
	for time.Since(start)+scale.db8ReaderHold <= scale.db8Duration {
		tx, err := d.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM usage").Scan(&n); err != nil {
			t.Fatal(err)
		}
		w0, t0 := fileSize(wal), time.Now()
		time.Sleep(scale.db8ReaderHold) // the reader's planned hold
		w1 := fileSize(wal)
		tx.Rollback()
		growth = append(growth, float64(w1-w0)/time.Since(t0).Seconds())
		holds = append(holds, time.Since(t0).Round(time.Millisecond).String())
		if rest := scale.db8ReaderEvery - scale.db8ReaderHold; time.Since(start)+rest < scale.db8Duration {
			time.Sleep(rest) // no reader: checkpoints can finish
		}
	}
	if rest := scale.db8Duration - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	okReq, failed := load.stop()
	elapsed := time.Since(start)
	peak := sampler.max.Load()
	bound := int64(journalSizeLimit * 12 / 10)
	if peak > bound {
		t.Errorf("-wal reached %d bytes, want ≤ %d (journal_size_limit + 20 %%)", peak, bound)
	}
	if failed > 0 {
		t.Errorf("%d proxied requests failed", failed)
	}

	// Idle: the -wal is checkpointed and truncated without any new write.
	var idleWAL int64
	truncated := poll(30*time.Second, func() bool { idleWAL = fileSize(wal); return idleWAL == 0 })
	var maxGrowth float64
	for _, g := range growth {
		maxGrowth = max(maxGrowth, g)
	}
	t.Logf("DB-8: %d usage writes in %v (%.0f/s); reader holds %v; -wal peak %.1f MiB (bound %.1f MiB); "+
		"growth while a reader held up to %.0f KiB/s (%.0f B per request); -wal once idle %d bytes",
		okReq, elapsed.Round(time.Second), float64(okReq)/elapsed.Seconds(), holds, float64(peak)/(1<<20),
		float64(bound)/(1<<20), maxGrowth/1024, maxGrowth/(float64(okReq)/elapsed.Seconds()), idleWAL)
	if !truncated {
		t.Errorf("-wal is %d bytes 30 s after the writes stopped, want it truncated to 0 when idle", idleWAL)
	}
	srv.stop()
}
