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

// WriteFunc stores a batch of records in one transaction.
type WriteFunc func(ctx context.Context, batch []aiproxy.Usage) error

// Recorder queues usage records and writes them in batches. Its exported
// fields may be changed after New, before the first Record.
type Recorder struct {
	write   WriteFunc
	log     *slog.Logger
	queue   chan aiproxy.Usage
	stop    chan struct{}
	done    chan struct{}
	mu      sync.RWMutex // guards closed against Record racing Close
	closed  bool
	dropped atomic.Int64
	written atomic.Int64

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
}

// New starts a Recorder with a queue of size records that writes through write.
func New(write WriteFunc, log *slog.Logger, size int) *Recorder {
	r := &Recorder{
		write:      write,
		log:        log,
		queue:      make(chan aiproxy.Usage, size),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		MaxBatch:   512,
		Linger:     100 * time.Millisecond,
		RetryDelay: 50 * time.Millisecond,
	}
	go r.run()
	return r
}

// Record queues u without blocking. When the queue is full, or the Recorder
// is closed, the record is dropped, counted and logged.
func (r *Recorder) Record(u aiproxy.Usage) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.closed {
		select {
		case r.queue <- u:
			return
		default:
		}
	}
	n := r.dropped.Add(1)
	r.log.Warn("usage record dropped", "reason", "queue full or closed", "dropped_total", n,
		"user", u.UserName, "provider", u.Provider)
}

// Dropped is how many records were dropped since the start.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

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

func (r *Recorder) run() {
	defer close(r.done)
	// The tuning fields are read only after the first record or Close,
	// which happen after the caller set them.
	var batch []aiproxy.Usage
	for {
		select {
		case u := <-r.queue:
			batch = append(batch[:0], u)
		case <-r.stop:
			r.drain(batch[:0])
			return
		}
		batch = r.fill(batch)
		r.flush(batch, false)
	}
}

// fill adds queued records to batch until it holds MaxBatch, Linger has
// passed, or the Recorder is closing.
func (r *Recorder) fill(batch []aiproxy.Usage) []aiproxy.Usage {
	var linger <-chan time.Time
	if r.Linger > 0 {
		t := time.NewTimer(r.Linger)
		defer t.Stop()
		linger = t.C
	}
	for len(batch) < r.MaxBatch {
		select {
		case u := <-r.queue:
			batch = append(batch, u)
			continue
		default:
		}
		if linger == nil {
			break
		}
		select {
		case u := <-r.queue:
			batch = append(batch, u)
		case <-linger:
			return batch
		case <-r.stop:
			return batch
		}
	}
	return batch
}

// drain writes whatever is left in the queue after Close.
func (r *Recorder) drain(batch []aiproxy.Usage) {
	for {
		select {
		case u := <-r.queue:
			batch = append(batch, u)
			if len(batch) == r.MaxBatch {
				r.flush(batch, true)
				batch = batch[:0]
			}
		default:
			r.flush(batch, true)
			return
		}
	}
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
		err := r.write(context.Background(), batch)
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
