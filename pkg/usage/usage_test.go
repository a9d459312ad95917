package usage_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// sink records the batches a Recorder writes.
type sink struct {
	mu      sync.Mutex
	batches []int
	fail    int // fail this many writes first
	wrote   chan struct{}
}

func newSink() *sink { return &sink{wrote: make(chan struct{}, 1000)} }

func (s *sink) write(_ context.Context, b []aiproxy.Usage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return errors.New("database is busy")
	}
	s.batches = append(s.batches, len(b))
	s.wrote <- struct{}{}
	return nil
}

func (s *sink) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches...)
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func rec(i int) aiproxy.Usage {
	return aiproxy.Usage{UserID: int64(i), UserName: "u", Path: "/v1/x", Status: 200}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestRecorder_LingerBatches: records that arrive within Linger of the
// first share one transaction, so a steady trickle of requests does not
// make one write (and about 16 KiB of WAL) each (DB-8).
func TestRecorder_LingerBatches(t *testing.T) {
	t.Parallel()
	s := newSink()
	r := usage.New(s.write, discard, 100)
	r.Linger = 300 * time.Millisecond
	for i := range 5 {
		r.Record(rec(i))
		time.Sleep(10 * time.Millisecond) // a trickle, well within Linger
	}
	select {
	case <-s.wrote:
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing written 5 s after the records")
	}
	if got := s.sizes(); len(got) != 1 || got[0] != 5 {
		t.Errorf("batches = %v, want one of 5", got)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestRecorder_MaxBatchCutsLinger: a full batch is written at once.
func TestRecorder_MaxBatchCutsLinger(t *testing.T) {
	t.Parallel()
	s := newSink()
	r := usage.New(s.write, discard, 100)
	r.Linger = time.Hour
	r.MaxBatch = 4
	for i := range 8 {
		r.Record(rec(i))
	}
	for range 2 {
		select {
		case <-s.wrote:
		case <-time.After(5 * time.Second):
			t.Fatalf("full batches not written within 5 s (batches %v)", s.sizes())
		}
	}
	if got := s.sizes(); len(got) != 2 || got[0] != 4 || got[1] != 4 {
		t.Errorf("batches = %v, want two of 4", got)
	}
	r.Close(t.Context())
}

// TestRecorder_CloseDoesNotWaitForLinger: Close writes what is queued at
// once.
func TestRecorder_CloseDoesNotWaitForLinger(t *testing.T) {
	t.Parallel()
	s := newSink()
	r := usage.New(s.write, discard, 100)
	r.Linger = time.Hour
	for i := range 3 {
		r.Record(rec(i))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close() error = %v after %v, want the queue written at once", err, time.Since(start))
	}
	if got := sum(s.sizes()); got != 3 || r.Written() != 3 || r.Dropped() != 0 {
		t.Errorf("after Close: %d written (%v), Written %d, Dropped %d; want 3, 3, 0", got, s.sizes(), r.Written(), r.Dropped())
	}
}

// TestRecorder_RetriesBusyWrites: a batch that fails (a held write lock,
// DB-3) is retried until it is written, not dropped.
func TestRecorder_RetriesBusyWrites(t *testing.T) {
	t.Parallel()
	s := newSink()
	s.fail = 3
	r := usage.New(s.write, discard, 100)
	r.RetryDelay = time.Millisecond
	r.Linger = 0
	for i := range 10 {
		r.Record(rec(i))
	}
	deadline := time.After(5 * time.Second)
	for sum(s.sizes()) < 10 {
		select {
		case <-s.wrote:
		case <-deadline:
			t.Fatalf("written %v after 5 s, want 10 records", s.sizes())
		}
	}
	r.Close(t.Context())
	if r.Dropped() != 0 || r.Written() != 10 {
		t.Errorf("Written %d, Dropped %d; want 10, 0", r.Written(), r.Dropped())
	}
}

// TestRecorder_BoundedWhileWriting: while a write is stuck (a held write
// lock), Record keeps returning at once; it queues up to size records and
// drops, and counts, the rest. Close then writes the queue.
func TestRecorder_BoundedWhileWriting(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var wrote []int
	write := func(_ context.Context, b []aiproxy.Usage) error {
		mu.Lock()
		first := len(wrote) == 0
		wrote = append(wrote, len(b))
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
		return nil
	}
	const size = 10
	r := usage.New(write, discard, size)
	r.Linger = 0
	r.Record(rec(0))
	<-entered // the writer holds record 0 and waits
	for i := range size + 5 {
		r.Record(rec(i + 1))
	}
	if got := r.Dropped(); got != 5 {
		t.Errorf("Dropped() with the writer stuck = %d, want 5 (%d records past a queue of %d)", got, size+5, size)
	}
	close(release)
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := sum(wrote); got != 1+size || r.Written() != 1+size || r.Dropped() != 5 {
		t.Errorf("after Close: %d written (%v), Written %d, Dropped %d; want %d, %d, 5",
			got, wrote, r.Written(), r.Dropped(), 1+size, 1+size)
	}
}

// TestRecorder_RecordRacesClose: records from many goroutines, some after
// Close began, are each either written or dropped, never lost, and no write
// exceeds MaxBatch.
func TestRecorder_RecordRacesClose(t *testing.T) {
	t.Parallel()
	s := newSink()
	s.wrote = make(chan struct{}, 100000)
	r := usage.New(s.write, discard, 100000)
	r.MaxBatch = 7
	r.Linger = time.Millisecond
	const goroutines, each = 4, 500
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for i := range each {
				r.Record(rec(i))
			}
		})
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	sizes := s.sizes()
	if got := r.Written() + r.Dropped(); got != goroutines*each || int64(sum(sizes)) != r.Written() {
		t.Errorf("Written %d + Dropped %d = %d, batches sum to %d; want %d records, all written ones in batches",
			r.Written(), r.Dropped(), got, sum(sizes), goroutines*each)
	}
	for _, n := range sizes {
		if n > 7 {
			t.Errorf("a batch of %d records, want at most MaxBatch 7", n)
		}
	}
}

// countingHandler counts the log records it is given and keeps the last.
type countingHandler struct {
	mu   sync.Mutex
	n    int
	last slog.Record
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	h.last = r.Clone()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestRecorder_DropsCountedExactlyLoggedSparingly: while the database is
// out and the queue is full, every dropped record is counted (Dropped,
// which metrics exports as aiproxy_usage_dropped_total), but the log gets
// a line for the first drop and then at most one a second, not one per
// request, each with the exact total.
func TestRecorder_DropsCountedExactlyLoggedSparingly(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	write := func(context.Context, []aiproxy.Usage) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		return nil
	}
	h := &countingHandler{}
	r := usage.New(write, slog.New(h), 10)
	r.Linger = 0
	r.Record(rec(0))
	<-entered
	start := time.Now()
	const drops = 5000
	for i := range 10 + drops {
		r.Record(rec(i + 1))
	}
	took := time.Since(start)
	close(release)
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.Dropped(); got != drops {
		t.Errorf("Dropped() = %d, want %d", got, drops)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if most := 1 + int(took/time.Second); h.n < 1 || h.n > most {
		t.Errorf("%d drops in %v logged %d lines, want 1 to %d", drops, took, h.n, most)
	}
	var total int64
	h.last.Attrs(func(a slog.Attr) bool {
		if a.Key == "dropped_total" {
			total = a.Value.Int64()
		}
		return true
	})
	if total < 1 || total > drops {
		t.Errorf("last drop line's dropped_total = %d, want 1..%d", total, drops)
	}
}
