package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// BenchmarkBigUsage runs only with AIPROXY_BENCH_BIG=1 (CI's one-iteration
// benchmark pass skips it): it fills a database with AIPROXY_BENCH_ROWS
// usage rows (default 10 million) spread evenly over 400 days, for 50
// users, 3 providers and 10 models, and reports
//
//   - the file size per million rows (bytes/Mrow, after a checkpoint),
//
//   - stats --since 30d --by user (ns/op, through admin.Service as the CLI),
//     at 00:00 UTC (whole days: usage_rollup alone) and at 14:00 (the
//     first day's rows from 14:00 on, then whole days), and for one user
//     by day; GET /me's totals (UserUsage),
//
//   - one retention transaction folding 500 rows (ns/op), with those rows
//     in the table: the longest the write lock is held by retention,
//
//   - in the log (-v): the fill time (usage_rollup's trigger included),
//     the roll-up's row count, and what migration 0009 takes to roll up
//     the whole history of a database from before it.
//
//     AIPROXY_BENCH_BIG=1 go test -run '^$' -bench BigUsage -benchtime 5x -timeout 30m ./pkg/store
func BenchmarkBigUsage(b *testing.B) {
	if os.Getenv("AIPROXY_BENCH_BIG") == "" {
		b.Skip("set AIPROXY_BENCH_BIG=1 to build a 10-million-row database")
	}
	rows := int64(10_000_000)
	if v := os.Getenv("AIPROXY_BENCH_ROWS"); v != "" {
		var n int64
		for _, c := range v {
			n = n*10 + int64(c-'0')
		}
		rows = n
	}
	const days = 400
	end := time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
	start := end.AddDate(0, 0, -days)
	path := filepath.Join(b.TempDir(), "aiproxy.db")
	d, err := store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { d.Close() }()
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	began := time.Now()
	// Rows in time order, as serve writes them, one transaction per
	// million; a recursive CTE makes them inside SQLite.
	const chunk = 1_000_000
	step := float64(int64(days)*86_400_000) / float64(rows)
	for first := int64(0); first < rows; first += chunk {
		n := min(chunk, rows-first)
		_, err := raw.Exec(`WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?1 + ?2)
			INSERT INTO usage (ts, user_id, user_name, provider, model, path, status, prompt_tokens, completion_tokens,
				total_tokens, duration_ms, ttfb_ms, streamed, partial, cost_micro_usd, unmetered)
			SELECT ?3 + CAST(i * ?4 AS INTEGER), i % 50 + 1, 'user' || (i % 50), 
				CASE i % 3 WHEN 0 THEN 'api.openai.com' WHEN 1 THEN 'api.groq.com' ELSE 'api.anthropic.com' END,
				'model-' || (i % 10), '/v1/chat/completions', CASE WHEN i % 17 = 0 THEN 429 ELSE 200 END,
				500 + i % 1000, 100 + i % 300, 600 + i % 1000 + i % 300, 800 + i % 4000, 200 + i % 500, i % 2, i % 50 = 0,
				(i % 1000) * 7, 0
			FROM s`, first, n, start.UnixMilli(), step)
		if err != nil {
			b.Fatalf("fill usage: %v", err)
		}
	}
	if _, err := raw.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d rows in %s; file %d bytes = %.1f MB per million rows", rows, time.Since(began).Round(time.Second),
		fi.Size(), float64(fi.Size())/float64(rows)*1e6/1e6)

	var rolled int64
	if err := raw.QueryRow("SELECT COUNT(*) FROM usage_rollup").Scan(&rolled); err != nil {
		b.Fatal(err)
	}
	b.Logf("usage_rollup: %d daily totals", rolled)

	svc := admin.New(d)
	svc.Now = func() time.Time { return end }
	midday := admin.New(d)
	midday.Now = func() time.Time { return end.Add(14 * time.Hour) }
	want, err := svc.Stats(context.Background(), admin.StatsQuery{Since: "30d", By: "user"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("stats_since_30d_by_user", func(b *testing.B) {
		for b.Loop() {
			out, err := svc.Stats(context.Background(), admin.StatsQuery{Since: "30d", By: "user"})
			if err != nil || len(out) != 50 {
				b.Fatalf("Stats() = %d rows, %v", len(out), err)
			}
		}
		b.ReportMetric(float64(fi.Size())/float64(rows)*1e6, "bytes/Mrow")
	})
	b.Run("stats_since_30d_by_user_at_14h", func(b *testing.B) {
		for b.Loop() {
			out, err := midday.Stats(context.Background(), admin.StatsQuery{Since: "30d", By: "user"})
			if err != nil || len(out) != 50 {
				b.Fatalf("Stats() = %d rows, %v", len(out), err)
			}
		}
	})
	b.Run("stats_user_since_30d_by_day", func(b *testing.B) {
		for b.Loop() {
			out, err := svc.Stats(context.Background(), admin.StatsQuery{User: "user7", Since: "30d", By: "day"})
			if err != nil || len(out) != 30 {
				b.Fatalf("Stats() = %d rows, %v", len(out), err)
			}
		}
	})
	b.Run("user_usage_me", func(b *testing.B) {
		for b.Loop() {
			if u, err := d.UserUsage(context.Background(), 8); err != nil || u.Requests != rows/50 {
				b.Fatalf("UserUsage() = %+v, %v; want %d requests", u, err, rows/50)
			}
		}
	})
	b.Run("fold_500_rows", func(b *testing.B) {
		before := end.AddDate(0, 0, -days+30) // the oldest 30 days fold
		for b.Loop() {
			if n, err := d.FoldUsage(context.Background(), before, 500); err != nil || n != 500 {
				b.Fatalf("FoldUsage() = %d, %v", n, err)
			}
		}
	})
	b.Run("stats_since_30d_by_user_after_folding", func(b *testing.B) {
		for b.Loop() {
			if _, err := svc.Stats(context.Background(), admin.StatsQuery{Since: "30d", By: "user"}); err != nil {
				b.Fatal(err)
			}
		}
	})

	// Migration 0009 on this history (rows and folded days), as an
	// upgrade from a database without it: its one-time roll-up.
	if d.Close() != nil {
		b.Fatal("Close")
	}
	for _, q := range []string{"DROP TRIGGER usage_rollup_add", "DROP TABLE usage_rollup",
		"DELETE FROM schema_migrations WHERE name = '0009_usage_rollup.sql'"} {
		if _, err := raw.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	began = time.Now()
	d, err = store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("migration 0009 rolled up %d rows and the folded days in %s", rows, time.Since(began).Round(time.Millisecond))
	svc = admin.New(d)
	svc.Now = func() time.Time { return end }
	if got, err := svc.Stats(context.Background(), admin.StatsQuery{Since: "30d", By: "user"}); err != nil || !reflect.DeepEqual(got, want) {
		b.Errorf("stats after the migration's roll-up = %v, %v; want %v", got, err, want)
	}
}
