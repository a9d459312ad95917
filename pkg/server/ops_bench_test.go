package server_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// benchRows is how many usage rows the operations benchmarks seed:
// AIPROXY_BENCH_ROWS, else a size that CI's one-iteration pass can afford.
func benchRows() int {
	if n, err := strconv.Atoi(os.Getenv("AIPROXY_BENCH_ROWS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// seedUsage writes n usage rows for the harness's user, spread evenly over
// the days before now (oldest first).
func seedUsage(b *testing.B, h *harness, n, days int) {
	b.Helper()
	users, err := h.svc.ListUsers(context.Background())
	if err != nil || len(users) == 0 {
		b.Fatalf("users: %v", err)
	}
	u := users[0]
	now := time.Now()
	step := time.Duration(days) * 24 * time.Hour / time.Duration(max(n, 1))
	one := int64(1)
	batch := make([]aiproxy.Usage, 0, 1000)
	for i := range n {
		batch = append(batch, aiproxy.Usage{
			Time: now.Add(-time.Duration(days)*24*time.Hour + time.Duration(i)*step), UserID: u.ID, UserName: u.Name,
			Provider: "api.openai.com", Model: "gpt-4o-mini", Path: "/v1/chat/completions", Status: 200,
			PromptTokens: &one, CompletionTokens: &one, TotalTokens: &one, Duration: time.Millisecond,
		})
		if len(batch) == cap(batch) || i == n-1 {
			if err := h.svc.RecordUsage(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// BenchmarkProxyWithUsageRows: a proxied request costs the same over an
// empty usage table and a large one (AIPROXY_BENCH_ROWS=10000000 for a
// year of a busy proxy): nothing on the request path reads usage rows.
// Compare the two sub-benchmarks' ns/op.
func BenchmarkProxyWithUsageRows(b *testing.B) {
	for _, rows := range []int{0, benchRows()} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			h := newHarness(b, harnessOpts{})
			seedUsage(b, h, rows, 400)
			hdr := bearer(h.key)
			b.ResetTimer()
			for b.Loop() {
				res := h.do("POST", "/v1/chat/completions", chatBody, hdr)
				res.Body.Close()
				if res.StatusCode != 200 {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
		})
	}
}

// BenchmarkProxyDuringRetention: the p99 of proxied requests while usage
// retention folds old rows in the background, against the same without
// (reported as p99-us). Retention writes in small transactions; the request
// path only reads, and SQLite's WAL lets reads go on beside a write.
func BenchmarkProxyDuringRetention(b *testing.B) {
	for _, folding := range []bool{false, true} {
		b.Run(map[bool]string{false: "idle", true: "folding"}[folding], func(b *testing.B) {
			h := newHarness(b, harnessOpts{})
			seedUsage(b, h, benchRows(), 400)
			if folding {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					_ = h.db.RunRetention(ctx, store.Retention{Keep: 24 * time.Hour, Every: time.Millisecond})
				}()
				b.Cleanup(func() { cancel(); <-done })
			}
			hdr := bearer(h.key)
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				res := h.do("POST", "/v1/chat/completions", chatBody, hdr)
				res.Body.Close()
				lat = append(lat, time.Since(start))
				if res.StatusCode != 200 {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
		})
	}
}
