package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// retentionDay0 is the first day of seedHistory.
var retentionDay0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// seedHistory stores n usage rows spread over days days from
// retentionDay0, for three users (one deleted later), two providers and
// three models, with errors, partial streams, unpriced and unmetered rows.
func seedHistory(t testing.TB, d *store.DB, n, days int, seed uint64) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 1))
	users := []string{"alice", "bob", "carol"}
	models := []string{"gpt-4o", "llama-3.3-70b", ""}
	providers := []string{"api.openai.com", "api.groq.com"}
	statuses := []int{200, 200, 200, 200, 429, 500, 400}
	batch := make([]aiproxy.Usage, 0, 1000)
	for i := range n {
		at := retentionDay0.Add(time.Duration(r.Int64N(int64(days) * int64(24*time.Hour))))
		u := r.IntN(len(users))
		rec := aiproxy.Usage{Time: at, UserID: int64(u + 1), UserName: users[u], Provider: providers[r.IntN(2)],
			Model: models[r.IntN(3)], Path: "/v1/chat/completions", Status: statuses[r.IntN(len(statuses))],
			Duration: time.Duration(r.IntN(5000)) * time.Millisecond, Streamed: r.IntN(2) == 0, Partial: r.IntN(10) == 0}
		if r.IntN(5) > 0 {
			p, c := int64(r.IntN(2000)), int64(r.IntN(800))
			tot := p + c
			rec.PromptTokens, rec.CompletionTokens, rec.TotalTokens = &p, &c, &tot
			if r.IntN(3) > 0 {
				cost := float64(r.IntN(1_000_000)) / 1e6
				rec.CostUSD = &cost
			}
		} else {
			rec.Unmetered = r.IntN(2) == 0
		}
		batch = append(batch, rec)
		if len(batch) == cap(batch) || i == n-1 {
			if err := d.InsertUsage(ctx, batch); err != nil {
				t.Fatalf("InsertUsage() error = %v", err)
			}
			batch = batch[:0]
		}
	}
}

// statsQueries are the stats a user may ask for whose ranges start at a day
// boundary: every grouping, with and without a user, since several days.
func statsQueries(days int) []aiproxy.StatsFilter {
	var fs []aiproxy.StatsFilter
	for _, by := range []string{"", aiproxy.ByUser, aiproxy.ByModel, aiproxy.ByProvider, aiproxy.ByDay} {
		for _, user := range []string{"", "bob"} {
			for _, day := range []int{-1, 0, 1, days / 2, days - 2, days - 1, days + 3} {
				f := aiproxy.StatsFilter{By: by, User: user}
				if day >= 0 {
					f.Since = retentionDay0.AddDate(0, 0, day)
				}
				fs = append(fs, f)
			}
		}
	}
	return fs
}

func allStats(t *testing.T, d *store.DB, fs []aiproxy.StatsFilter) map[string][]aiproxy.StatsRow {
	t.Helper()
	out := map[string][]aiproxy.StatsRow{}
	for _, f := range fs {
		rows, err := d.Stats(t.Context(), f)
		if err != nil {
			t.Fatalf("Stats(%+v) error = %v", f, err)
		}
		out[fmt.Sprintf("by=%q user=%q since=%s", f.By, f.User, f.Since.Format(time.DateOnly))] = rows
	}
	return out
}

func usageRows(t *testing.T, d *store.DB) int64 {
	t.Helper()
	var n int64
	if err := openRaw(t, d.Path()).QueryRowContext(t.Context(), "SELECT COUNT(*) FROM usage").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRetention_StatsSameBeforeAndAfterFolding: folding rows into daily
// totals changes no stats answer whose range starts at a day boundary,
// whatever the grouping or user, errors, partial, unmetered and cost
// included; and a --since inside a folded day counts that whole day.
func TestRetention_StatsSameBeforeAndAfterFolding(t *testing.T) {
	t.Parallel()
	const days = 20
	d := newTestStore(t)
	seedHistory(t, d, 3000, days, 7)
	qs := statsQueries(days)
	before := allStats(t, d, qs)
	totalBefore := usageRows(t, d)

	// Keep 5 days: days 0–14 fold, days 15–19 stay rows.
	now := retentionDay0.AddDate(0, 0, days).Add(13 * time.Hour)
	r := store.Retention{Keep: 5 * 24 * time.Hour, Chunk: 97, Pause: time.Nanosecond, Now: func() time.Time { return now }}
	n, err := d.FoldOld(t.Context(), r)
	if err != nil {
		t.Fatalf("FoldOld() error = %v", err)
	}
	left := usageRows(t, d)
	if n == 0 || int64(n)+left != totalBefore {
		t.Fatalf("FoldOld() folded %d rows, %d left of %d", n, left, totalBefore)
	}
	after := allStats(t, d, qs)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("stats changed by folding (-before +after):\n%s", diff)
	}
	if again, err := d.FoldOld(t.Context(), r); again != 0 || err != nil {
		t.Errorf("second FoldOld() = %d, %v; want 0, nil", again, err)
	}

	// Since 12:00 on folded day 1 is since 00:00 that day.
	for _, by := range []string{"", aiproxy.ByUser} {
		mid, err := d.Stats(t.Context(), aiproxy.StatsFilter{By: by, Since: retentionDay0.AddDate(0, 0, 1).Add(12 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("by=%q user=%q since=%s", by, "", retentionDay0.AddDate(0, 0, 1).Format(time.DateOnly))
		if diff := cmp.Diff(before[key], mid); diff != "" {
			t.Errorf("--since inside a folded day, by %q: want that whole day (-day +got):\n%s", by, diff)
		}
	}
}

// TestRetention_UserUsageKeepsFoldedDays: GET /me's totals count folded
// days too.
func TestRetention_UserUsageKeepsFoldedDays(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	seedHistory(t, d, 500, 10, 3)
	before, err := d.UserUsage(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	now := retentionDay0.AddDate(0, 0, 30)
	if _, err := d.FoldOld(t.Context(), store.Retention{Keep: 24 * time.Hour, Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	if n := usageRows(t, d); n != 0 {
		t.Fatalf("%d usage rows left, want all folded", n)
	}
	after, err := d.UserUsage(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if before.Requests == 0 || before != after {
		t.Errorf("UserUsage(bob) = %+v after folding, %+v before", after, before)
	}
}

// TestRetention_SmallTransactions: one FoldUsage folds at most its limit,
// oldest first, and never a row of the current day.
func TestRetention_SmallTransactions(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	seedHistory(t, d, 300, 3, 5)
	total := usageRows(t, d)
	// Everything is older than day 3, 00:00.
	horizon := retentionDay0.AddDate(0, 0, 3).Add(18 * time.Hour)
	var folded int64
	for i := 0; ; i++ {
		n, err := d.FoldUsage(t.Context(), horizon, 40)
		if err != nil {
			t.Fatal(err)
		}
		if n > 40 {
			t.Fatalf("FoldUsage(limit 40) folded %d rows", n)
		}
		folded += int64(n)
		if n < 40 {
			break
		}
	}
	if folded != total {
		t.Errorf("folded %d of %d rows", folded, total)
	}
	if got := store.FoldHorizon(time.Date(2026, 5, 2, 10, 0, 0, 0, time.UTC), 24*time.Hour); !got.Equal(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("FoldHorizon(May 2 10:00, 1d) = %v, want May 1 00:00: the rows of the day before now-keep only", got)
	}
}

// TestRetention_BelowOneDayRefused: a retention under a day is EINVALID.
func TestRetention_BelowOneDayRefused(t *testing.T) {
	t.Parallel()
	for _, keep := range []time.Duration{0, time.Hour, 23*time.Hour + 59*time.Minute} {
		wantCode(t, fmt.Sprintf("CheckRetention(%s)", keep), store.CheckRetention(keep), aiproxy.EINVALID)
	}
	if err := store.CheckRetention(24 * time.Hour); err != nil {
		t.Errorf("CheckRetention(24h) error = %v, want nil", err)
	}
	d := newTestStore(t)
	wantCode(t, "RunRetention(1h)", d.RunRetention(t.Context(), store.Retention{Keep: time.Hour}), aiproxy.EINVALID)
}

// TestRetention_RunFoldsThenStopsWithItsContext: the background loop folds
// at once, and returns when its context ends.
func TestRetention_RunFoldsThenStopsWithItsContext(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	seedHistory(t, d, 200, 2, 9)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- d.RunRetention(ctx, store.Retention{Keep: 24 * time.Hour, Every: time.Hour,
			Now: func() time.Time { return retentionDay0.AddDate(0, 0, 10) }})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for usageRows(t, d) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("RunRetention folded nothing in 30 s")
		}
		runtime.Gosched()
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("RunRetention() = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunRetention did not return after its context ended")
	}
}
