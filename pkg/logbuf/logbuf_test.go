package logbuf_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/logbuf"
)

// sink records what reaches the underlying writer, one entry per write,
// and signals each write.
type sink struct {
	mu     sync.Mutex
	writes []string
	wrote  chan struct{}
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.writes = append(s.writes, string(p))
	s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (s *sink) all() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.writes, "")
}

// TestWriter_BatchesAndKeepsOrder: lines written by many goroutines reach
// the writer whole, in few writes, and none is lost at Close.
func TestWriter_BatchesAndKeepsOrder(t *testing.T) {
	s := &sink{wrote: make(chan struct{}, 1)}
	w := logbuf.New(s, time.Hour) // only size and Close flush here
	var wg sync.WaitGroup
	const writers, lines = 8, 2000
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "g%d line %04d %s\n", g, i, strings.Repeat("x", 40))
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(s.all(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
	next := map[string]int{}
	for _, l := range got {
		var g string
		var i int
		if _, err := fmt.Sscanf(l, "%s line %d", &g, &i); err != nil {
			t.Fatalf("torn line %q", l)
		}
		if i != next[g] {
			t.Fatalf("%s: line %d after %d: out of order", g, i, next[g]-1)
		}
		next[g]++
	}
	if n := len(s.writes); n > writers*lines/100 {
		t.Errorf("%d writes for %d lines, want them batched", n, writers*lines)
	}
	// After Close, writes go straight through.
	fmt.Fprintln(w, "late")
	if !strings.HasSuffix(s.all(), "late\n") {
		t.Error("a write after Close was not written")
	}
}

// TestWriter_FlushesAfterInterval: a lone line is written by the timer,
// without Flush or Close.
func TestWriter_FlushesAfterInterval(t *testing.T) {
	s := &sink{wrote: make(chan struct{}, 1)}
	w := logbuf.New(s, 10*time.Millisecond)
	defer w.Close()
	start := time.Now()
	fmt.Fprintln(w, "one")
	if s.all() != "" {
		t.Fatal("written at once, want buffered")
	}
	select {
	case <-s.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("never written")
	}
	if got := s.all(); got != "one\n" {
		t.Errorf("wrote %q", got)
	}
	if d := time.Since(start); d < 10*time.Millisecond {
		t.Errorf("written after %v, before the interval", d)
	}
	var b bytes.Buffer
	w2 := logbuf.New(&b, time.Hour)
	fmt.Fprintln(w2, "two")
	w2.Flush()
	if b.String() != "two\n" {
		t.Errorf("Flush wrote %q", b.String())
	}
	// An immediate line is written at once, after the buffered ones.
	fmt.Fprintln(w2, "three")
	fmt.Fprintln(w2.Immediate(), "four")
	if b.String() != "two\nthree\nfour\n" {
		t.Errorf("after an immediate line: %q", b.String())
	}
}

// BenchmarkWrite is one request's log line: a copy, no system call.
// Allocation budget: 0 allocs/op.
func BenchmarkWrite(b *testing.B) {
	w := logbuf.New(discard{}, 100*time.Millisecond)
	defer w.Close()
	line := []byte(`{"time":"2026-11-26T04:00:00Z","level":"INFO","msg":"proxy","method":"POST","path":"/v1/chat/completions","user":"alice","status":200}` + "\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		w.Write(line)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
