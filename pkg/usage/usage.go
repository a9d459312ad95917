// Package usage records proxied requests off the request path: Record puts
// a record on a bounded queue and never blocks; one goroutine writes the
// queue to the store in batches, and Close flushes what is left.
package usage

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// DefaultQueue is how many records serve keeps waiting for the database:
// a minute at 2,000 requests a second, so that usage proxied through an
// outage of PostgreSQL as long as the cached keys are served (store's
// DefaultOutageGrace) reaches the database once it is back. A record is
// about 250 bytes; the queue grows only as it fills.
const DefaultQueue = 120_000

// dropLogEvery is the least time between two log lines about dropped
// records: a full queue at 2,000 requests a second would otherwise log
// 2,000 lines a second. The count is exact in every line and in Dropped.
const dropLogEvery = time.Second

// maxFree is the most emptied batches kept for reuse: enough for a steady
// load, while the memory of a queue filled during an outage goes back to
// the garbage collector once written.
const maxFree = 16

// WriteFunc stores a batch of records in one transaction.
type WriteFunc func(ctx context.Context, batch []aiproxy.Usage) error

// Recorder queues usage records and writes them in batches. Its exported
// fields may be changed after New, before the first Record.
//
// Record appends to a slice under a mutex; it wakes the writer goroutine
// only when the queue goes from empty to one record, or fills a batch, not
// once per record. The writer then waits Linger on its timer and takes the
// queued batches at once. The queue is a list of batches, each a slice of
// MaxBatch records allocated once and reused, so that neither Record nor
// the writer ever copies a record once queued.
type Recorder struct {
	write WriteFunc
	log   *slog.Logger
	size  int // the most records queued

	mu      sync.Mutex
	pending [][]aiproxy.Usage // queued batches, oldest first; only the last may be partly filled
	queued  int               // records in pending
	free    [][]aiproxy.Usage // written batches, emptied, for Record to fill again
	closed  bool

	wake    chan struct{} // buffered 1: the queue became non-empty or filled a batch
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Int64
	written atomic.Int64
	// droppedLogged and dropLogAt: the count and time (Unix ns) of the
	// last log line about dropped records.
	droppedLogged atomic.Int64
	dropLogAt     atomic.Int64

	// MaxBatch is the most records written in one transaction.
	MaxBatch int
	// Linger is how long the writer waits, after the first record of a
	// batch, for more to join it (unless MaxBatch fills first). Every
	// transaction rewrites at least one page of the usage table and of each
	// of its indexes, about 16 KiB of WAL, so one per record at a few
	// hundred requests a second grows the WAL by megabytes a second while a
	// reader holds an old snapshot (DB-8), and takes the write lock as often
	// from the CLI. Records reach the database up to Linger later; Close
	// does not wait for it.
	Linger time.Duration
	// RetryDelay is the first wait before retrying a failed batch write;
	// it doubles up to one second.
	RetryDelay time.Duration
	// OnBatch, when set, is told of each batch write: its records, how
	// long the write took and its error (pkg/metrics' UsageBatch). It runs
	// on the writer goroutine and must not block.
	OnBatch func(records int, took time.Duration, err error)
}

// New starts a Recorder that holds up to size records not yet written and
// writes through write.
func New(write WriteFunc, log *slog.Logger, size int) *Recorder {
	r := &Recorder{
		write:      write,
		log:        log,
		size:       max(size, 1),
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		MaxBatch:   512,
		Linger:     100 * time.Millisecond,
		RetryDelay: 50 * time.Millisecond,
	}
	go r.run()
	return r
}

// Record queues u without blocking: it never waits for the database, only
// for r.mu, which the writer holds only to take or return batches. When
// size records are already waiting, or the Recorder is closed, the record
// is dropped, counted and logged.
func (r *Recorder) Record(u aiproxy.Usage) {
	r.mu.Lock()
	if r.closed || r.queued >= r.size {
		r.mu.Unlock()
		r.dropped.Add(1)
		r.logDropped(u)
		return
	}
	per := r.maxBatch()
	last := len(r.pending) - 1
	if last < 0 || len(r.pending[last]) == per {
		r.pending = append(r.pending, r.newBatch(per))
		last++
	}
	r.pending[last] = append(r.pending[last], u)
	r.queued++
	wake := r.queued == 1 || len(r.pending[last]) == per
	r.mu.Unlock()
	if wake {
		select {
		case r.wake <- struct{}{}:
		default: // the writer has a wake-up coming already
		}
	}
}

// logDropped logs that records were dropped because the queue was full or
// closed: at once for the first, then at most once per dropLogEvery, each
// line with the records dropped since the previous one and in all.
func (r *Recorder) logDropped(u aiproxy.Usage) {
	now := time.Now().UnixNano()
	last := r.dropLogAt.Load()
	if last != 0 && now-last < int64(dropLogEvery) || !r.dropLogAt.CompareAndSwap(last, now) {
		return
	}
	total := r.dropped.Load()
	since := total - r.droppedLogged.Swap(total)
	r.log.Warn("usage records dropped", "reason", "queue full or closed", "queue", r.size,
		"dropped", since, "dropped_total", total, "user", u.UserName, "provider", u.Provider)
}

// Dropped is how many records were dropped since the start.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Queued is how many records wait to be written.
func (r *Recorder) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queued
}

// Written is how many records were stored since the start.
func (r *Recorder) Written() int64 { return r.written.Load() }

// Close stops accepting records, writes everything still queued and
// returns when done or when ctx ends.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	r.mu.Unlock()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Recorder) maxBatch() int { return max(r.MaxBatch, 1) }

// newBatch returns an empty batch with room for per records, reused if
// possible. The caller holds r.mu.
func (r *Recorder) newBatch(per int) []aiproxy.Usage {
	if n := len(r.free); n > 0 {
		b := r.free[n-1]
		r.free[n-1] = nil
		r.free = r.free[:n-1]
		return b
	}
	return make([]aiproxy.Usage, 0, min(per, r.size))
}

// run is the writer: it waits for a first record, lingers for more, and
// writes them, until Close; then it writes whatever is left. The tuning
// fields are read only after the first record or Close, which happen after
// the caller set them.
func (r *Recorder) run() {
	defer close(r.done)
	var batches [][]aiproxy.Usage // taken from pending, being written
	var linger *time.Timer
	for r.wait(nil, r.hasPending) != stopped {
		all := true // take every queued record, not only full batches
		if r.Linger > 0 {
			if linger == nil {
				linger = time.NewTimer(r.Linger)
			} else {
				linger.Reset(r.Linger)
			}
			why := r.wait(linger.C, r.hasFull)
			linger.Stop()
			if why == stopped {
				break
			}
			all = why == expired
		}
		batches = r.take(batches, all)
		r.writeAll(batches, false)
	}
	// Closed: Record adds nothing more.
	batches = r.take(batches, true)
	r.writeAll(batches, true)
}

type waitResult int

const (
	ready waitResult = iota
	expired
	stopped
)

// wait returns ready once cond, checked under r.mu at each wake-up, holds;
// expired when t fires first; stopped when Close was called.
func (r *Recorder) wait(t <-chan time.Time, cond func() bool) waitResult {
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return ready
		}
		select {
		case <-r.wake:
		case <-t:
			return expired
		case <-r.stop:
			return stopped
		}
	}
}

func (r *Recorder) hasPending() bool { return r.queued > 0 }

func (r *Recorder) hasFull() bool { return len(r.pending) > 0 && len(r.pending[0]) == r.maxBatch() }

// take moves the queued batches into batches (emptied first) and returns
// it: all of them, or with all false only the full ones, the last one
// staying queued to linger for more.
func (r *Recorder) take(batches [][]aiproxy.Usage, all bool) [][]aiproxy.Usage {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := len(r.pending)
	if !all && k > 0 && len(r.pending[k-1]) < r.maxBatch() {
		k--
	}
	batches = append(batches[:0], r.pending[:k]...)
	rest := copy(r.pending, r.pending[k:])
	clear(r.pending[rest:])
	r.pending = r.pending[:rest]
	for _, b := range batches {
		r.queued -= len(b)
	}
	return batches
}

// writeAll writes each of batches in its own transaction, then keeps them,
// emptied, for Record to fill again: as many as hold size records (at most
// maxFree), so that a full queue allocates no more than a channel of size
// records would.
func (r *Recorder) writeAll(batches [][]aiproxy.Usage, closing bool) {
	for _, b := range batches {
		r.flush(b, closing)
		clear(b) // the records, for the garbage collector
	}
	r.mu.Lock()
	keep := min((r.size+r.maxBatch()-1)/r.maxBatch(), maxFree)
	for _, b := range batches {
		if len(r.free) >= keep {
			break
		}
		r.free = append(r.free, b[:0])
	}
	r.mu.Unlock()
	clear(batches)
}

// flush writes one batch, retrying with backoff while the database is
// busy. Once closing, it tries a few times more and then gives up, counting
// the batch as dropped.
func (r *Recorder) flush(batch []aiproxy.Usage, closing bool) {
	if len(batch) == 0 {
		return
	}
	delay := r.RetryDelay
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := r.write(context.Background(), batch)
		if r.OnBatch != nil {
			r.OnBatch(len(batch), time.Since(start), err)
		}
		if err == nil {
			r.written.Add(int64(len(batch)))
			return
		}
		r.log.Error("write usage records", "err", err, "records", len(batch), "attempt", attempt)
		stopping := closing
		if !stopping {
			select {
			case <-r.stop:
				stopping = true
			default:
			}
		}
		if stopping && attempt >= 5 {
			n := r.dropped.Add(int64(len(batch)))
			r.log.Error("usage records lost", "records", len(batch), "dropped_total", n)
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.stop:
			t.Stop()
		}
		delay = min(2*delay, time.Second)
	}
}
