package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

func benchUsage() aiproxy.Usage {
	p, c, t := int64(12), int64(5), int64(17)
	return aiproxy.Usage{
		Time: time.Now(), UserID: 1, UserName: "bench", Provider: "api.openai.com", Model: "gpt-4o-mini",
		Path: "/v1/chat/completions", Status: 200, PromptTokens: &p, CompletionTokens: &c, TotalTokens: &t,
		Duration: 420 * time.Millisecond, TTFB: 180 * time.Millisecond, Streamed: true,
	}
}

// BenchmarkInsertUsage writes batches of 100 usage records, as the
// recorder does under load (it lingers 100 ms for a batch), and reports the
// cost per record: the usage writer's background CPU per proxied request.
//
//   - per_row: InsertUsage as it is, one Stmt.Exec per record.
//     Allocation budget: ≤ 20 allocs per record (database/sql's boxing of
//     16 arguments and its per-Exec bookkeeping).
//   - multi_row: the same rows as one INSERT … VALUES (…), (…) per 50
//     records, the shape a future InsertUsage could take; it measures what
//     the per-Exec overhead costs. Allocation budget: ≤ 18 allocs per
//     record (the argument boxing remains).
//   - per_row_mixed: per_row with each batch's records spread over 50
//     users, 3 providers and 10 models (the usage_rollup trigger then
//     updates up to 100 daily totals per batch instead of one).
func BenchmarkInsertUsage(b *testing.B) {
	const batch = 100
	us := make([]aiproxy.Usage, batch)
	mixed := make([]aiproxy.Usage, batch)
	for i := range us {
		us[i] = benchUsage()
		mixed[i] = benchUsage()
		mixed[i].UserID = int64(i*7%50) + 1
		mixed[i].UserName = fmt.Sprintf("user%d", mixed[i].UserID)
		mixed[i].Provider = []string{"api.openai.com", "api.groq.com", "api.anthropic.com"}[i%3]
		mixed[i].Model = fmt.Sprintf("model-%d", i%10)
	}
	for _, bc := range []struct {
		name  string
		write func(ctx context.Context, d *DB, batch []aiproxy.Usage) error
		us    []aiproxy.Usage
	}{
		{"per_row", func(ctx context.Context, d *DB, batch []aiproxy.Usage) error { return d.InsertUsage(ctx, batch) }, us},
		{"per_row_mixed", func(ctx context.Context, d *DB, batch []aiproxy.Usage) error { return d.InsertUsage(ctx, batch) }, mixed},
		{"multi_row", insertUsageMultiRow, us},
	} {
		us := bc.us
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			d, err := Open(ctx, filepath.Join(b.TempDir(), "aiproxy.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if err := bc.write(ctx, d, us); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
		})
	}
}

// insertUsageMultiRow is InsertUsage with 50 rows per statement.
func insertUsageMultiRow(ctx context.Context, d *DB, batch []aiproxy.Usage) error {
	const cols = `INSERT INTO usage (ts, user_id, user_name, provider, model, path, status,
		prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens,
		duration_ms, ttfb_ms, streamed, partial) VALUES `
	const row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	const per = 50
	return d.write(ctx, func(tx *sql.Tx) error {
		args := make([]any, 0, 16*per)
		for lo := 0; lo < len(batch); lo += per {
			hi := min(lo+per, len(batch))
			args = args[:0]
			for _, u := range batch[lo:hi] {
				var ttfb sql.NullInt64
				if u.TTFB > 0 {
					ttfb = sql.NullInt64{Int64: u.TTFB.Milliseconds(), Valid: true}
				}
				args = append(args, ms(u.Time), u.UserID, u.UserName, u.Provider, u.Model, u.Path, u.Status,
					u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.ReasoningTokens, u.CachedTokens,
					u.Duration.Milliseconds(), ttfb, u.Streamed, u.Partial)
			}
			q := cols + strings.TrimSuffix(strings.Repeat(row+",", hi-lo), ",")
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// BenchmarkInsertUsage_Postgres: the usage writer's batches on PostgreSQL
// (InsertUsage: multi-row INSERTs of 64 rows, the usage_rollup trigger of
// migration 0009 once per row, one transaction under the write lock), in
// batches of 200 (the usage writer's batch at 2,000 requests/s and its
// 100 ms linger) and 512 (its MaxBatch), each batch's records spread over
// 50 users, 3 providers and 10 models. records/s is what one writer keeps
// up with; issue 16 asks for 2,000. The server is a cluster of the
// benchmark's own that commits synchronously (synchronous_commit=on, as in
// production; fsync stays off: the disk's flush is not measured).
//
//	go test -run '^$' -bench BenchmarkInsertUsage_Postgres -benchtime 200x ./pkg/store
func BenchmarkInsertUsage_Postgres(b *testing.B) {
	cluster := pgtest.NewCluster(b)
	for _, size := range []int{200, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			us := make([]aiproxy.Usage, size)
			for i := range us {
				us[i] = benchUsage()
				us[i].UserID = int64(i*7%50) + 1
				us[i].UserName = fmt.Sprintf("user%d", us[i].UserID)
				us[i].Provider = []string{"api.openai.com", "api.groq.com", "api.anthropic.com"}[i%3]
				us[i].Model = fmt.Sprintf("model-%d", i%10)
			}
			ctx := context.Background()
			d, err := Open(ctx, cluster.NewDatabase(b), WithSecretKey(TestSecret, "AIPROXY_SECRET_KEY"))
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if err := d.InsertUsage(ctx, us); err != nil {
					b.Fatal(err)
				}
				n += size
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
