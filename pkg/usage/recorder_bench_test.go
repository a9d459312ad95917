package usage_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

func benchRecord() aiproxy.Usage {
	p, c, t := int64(12), int64(5), int64(17)
	return aiproxy.Usage{
		Time: time.Now(), UserID: 1, UserName: "bench", Provider: "api.openai.com", Model: "gpt-4o-mini",
		Path: "/v1/chat/completions", Status: 200, PromptTokens: &p, CompletionTokens: &c, TotalTokens: &t,
		Duration: 420 * time.Millisecond, TTFB: 180 * time.Millisecond, Streamed: true,
	}
}

// BenchmarkRecorder measures usage recording.
//
//   - record: Record, the only part on the request path (the queue has
//     room; the writer discards). Allocation budget: 0 allocs/op: a mutex
//     and an append of the record by value to a batch allocated once and
//     reused; no channel send, and no wake-up of the writer but one per
//     batch.
//   - record_parallel: the same from concurrent requests (GOMAXPROCS
//     goroutines), which contend for that mutex. Same budget.
//   - sqlite: records per second through the writer into a real database
//     (Record, then Close, which writes what is left): what the writer
//     goroutine costs per request in the background, about 10 µs of CPU
//     per record here, mostly one Stmt.Exec (16 arguments, 3 indexes) per
//     record. Allocation budget: ≤ 20 allocs and ≤ 1.2 KiB per record,
//     database/sql's boxing of the 16 columns, plus the queue's batches
//     (168 B per queued record, as the backlog here reaches b.N).
func BenchmarkRecorder(b *testing.B) {
	b.Run("record", func(b *testing.B) {
		r := usage.New(func(context.Context, []aiproxy.Usage) error { return nil }, discard, 1<<16)
		defer r.Close(context.Background())
		u := benchRecord()
		b.ReportAllocs()
		for b.Loop() {
			r.Record(u)
		}
		// A full queue drops (and logs) instead: count it, not hide it.
		b.ReportMetric(float64(r.Dropped())/float64(b.N), "dropped/op")
	})
	b.Run("record_parallel", func(b *testing.B) {
		r := usage.New(func(context.Context, []aiproxy.Usage) error { return nil }, discard, 1<<16)
		defer r.Close(context.Background())
		u := benchRecord()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record(u)
			}
		})
		b.ReportMetric(float64(r.Dropped())/float64(b.N), "dropped/op")
	})
	b.Run("sqlite", func(b *testing.B) {
		ctx := context.Background()
		d, err := store.Open(ctx, filepath.Join(b.TempDir(), "aiproxy.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		u := benchRecord()
		r := usage.New(d.InsertUsage, discard, b.N+1)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			r.Record(u)
		}
		// Close writes what is still queued: it is part of the cost.
		if err := r.Close(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if r.Dropped() > 0 || r.Written() != int64(b.N) {
			b.Fatalf("written %d, dropped %d of %d", r.Written(), r.Dropped(), b.N)
		}
	})
}
