package store_test

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// seedUsage stores a small, hand-countable history over two days:
//
//	day 1 (2026-03-13): alice gpt-4o openai 200 (10+5), alice gpt-4o openai 429 (no usage),
//	                    bob llama groq 200 (100+50, streamed, partial)
//	day 2 (2026-03-14): alice llama groq 200 (1+2), bob gpt-4o openai 500 (no usage),
//	                    bob gpt-4o openai 200 (7+3)
func seedUsage(t *testing.T, d *store.DB) (alice, bob aiproxy.User) {
	t.Helper()
	ctx := t.Context()
	createUser(t, d, "alice", nil)
	createUser(t, d, "bob", nil)
	alice, _ = d.UserByName(ctx, "alice")
	bob, _ = d.UserByName(ctx, "bob")
	day1 := time.Date(2026, 3, 13, 23, 59, 59, 0, time.UTC)
	day2 := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	tok := func(p, c int64) (*int64, *int64, *int64) { return &p, &c, ptr(p + c) }
	rec := func(at time.Time, u aiproxy.User, model, provider string, status int, p, c int64, usage bool) aiproxy.Usage {
		r := aiproxy.Usage{Time: at, UserID: u.ID, UserName: u.Name, Provider: provider, Model: model,
			Path: "/v1/chat/completions", Status: status, Duration: 1500 * time.Millisecond, TTFB: 200 * time.Millisecond}
		if usage {
			r.PromptTokens, r.CompletionTokens, r.TotalTokens = tok(p, c)
		}
		return r
	}
	streamed := rec(day1.Add(-time.Hour), bob, "llama", "api.groq.com", 200, 100, 50, true)
	streamed.Streamed, streamed.Partial = true, true
	batch := []aiproxy.Usage{
		rec(day1.Add(-2*time.Hour), alice, "gpt-4o", "api.openai.com", 200, 10, 5, true),
		rec(day1, alice, "gpt-4o", "api.openai.com", 429, 0, 0, false),
		streamed,
		rec(day2, alice, "llama", "api.groq.com", 200, 1, 2, true),
		rec(day2.Add(time.Hour), bob, "gpt-4o", "api.openai.com", 500, 0, 0, false),
		rec(day2.Add(2*time.Hour), bob, "gpt-4o", "api.openai.com", 200, 7, 3, true),
	}
	if err := d.InsertUsage(ctx, batch); err != nil {
		t.Fatalf("InsertUsage() error = %v", err)
	}
	return alice, bob
}

func TestStats(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	seedUsage(t, d)
	day2 := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)

	type row = aiproxy.StatsRow
	tests := []struct {
		name   string
		filter aiproxy.StatsFilter
		want   []row
	}{
		{"totals", aiproxy.StatsFilter{},
			[]row{{Key: "", Requests: 6, Errors: 2, Partial: 1, PromptTokens: 118, CompletionTokens: 60, TotalTokens: 178}}},
		{"by user", aiproxy.StatsFilter{By: aiproxy.ByUser}, []row{
			{Key: "alice", Requests: 3, Errors: 1, PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18},
			{Key: "bob", Requests: 3, Errors: 1, Partial: 1, PromptTokens: 107, CompletionTokens: 53, TotalTokens: 160},
		}},
		{"by model", aiproxy.StatsFilter{By: aiproxy.ByModel}, []row{
			{Key: "gpt-4o", Requests: 4, Errors: 2, PromptTokens: 17, CompletionTokens: 8, TotalTokens: 25},
			{Key: "llama", Requests: 2, Partial: 1, PromptTokens: 101, CompletionTokens: 52, TotalTokens: 153},
		}},
		{"by provider", aiproxy.StatsFilter{By: aiproxy.ByProvider}, []row{
			{Key: "api.groq.com", Requests: 2, Partial: 1, PromptTokens: 101, CompletionTokens: 52, TotalTokens: 153},
			{Key: "api.openai.com", Requests: 4, Errors: 2, PromptTokens: 17, CompletionTokens: 8, TotalTokens: 25},
		}},
		{"by day (UTC)", aiproxy.StatsFilter{By: aiproxy.ByDay}, []row{
			{Key: "2026-03-13", Requests: 3, Errors: 1, Partial: 1, PromptTokens: 110, CompletionTokens: 55, TotalTokens: 165},
			{Key: "2026-03-14", Requests: 3, Errors: 1, PromptTokens: 8, CompletionTokens: 5, TotalTokens: 13},
		}},
		{"since day 2 (inclusive)", aiproxy.StatsFilter{Since: day2},
			[]row{{Requests: 3, Errors: 1, PromptTokens: 8, CompletionTokens: 5, TotalTokens: 13}}},
		{"since one millisecond after day 2 starts", aiproxy.StatsFilter{Since: day2.Add(time.Millisecond)},
			[]row{{Requests: 2, Errors: 1, PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10}}},
		{"user filter", aiproxy.StatsFilter{User: "alice"},
			[]row{{Requests: 3, Errors: 1, PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18}}},
		{"user and since by model", aiproxy.StatsFilter{User: "bob", Since: day2, By: aiproxy.ByModel},
			[]row{{Key: "gpt-4o", Requests: 2, Errors: 1, PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10}}},
		{"unknown user totals are zero", aiproxy.StatsFilter{User: "nobody"}, []row{{}}},
		{"unknown user grouped is empty", aiproxy.StatsFilter{User: "nobody", By: aiproxy.ByUser}, []row{}},
		{"user filter is not a pattern", aiproxy.StatsFilter{User: "%"}, []row{{}}},
		{"since in the future", aiproxy.StatsFilter{Since: day2.Add(24 * time.Hour), By: aiproxy.ByDay}, []row{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := d.Stats(t.Context(), tc.filter)
			if err != nil {
				t.Fatalf("Stats(%+v) error = %v", tc.filter, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Stats(%+v) mismatch (-want +got):\n%s", tc.filter, diff)
			}
		})
	}
}

func TestStats_InvalidBy(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	for _, by := range []string{"User", "path", "user_name", "1; DROP TABLE usage"} {
		_, err := d.Stats(t.Context(), aiproxy.StatsFilter{By: by})
		wantCode(t, "Stats(by "+by+")", err, aiproxy.EINVALID)
	}
	if _, err := d.ListUsers(t.Context()); err != nil {
		t.Errorf("ListUsers() after hostile Stats error = %v", err)
	}
}

func TestInsertUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	if err := d.InsertUsage(ctx, nil); err != nil {
		t.Errorf("InsertUsage(nil) error = %v", err)
	}
	if err := d.InsertUsage(ctx, []aiproxy.Usage{}); err != nil {
		t.Errorf("InsertUsage(empty) error = %v", err)
	}
	// A large batch goes in one transaction.
	batch := make([]aiproxy.Usage, 2000)
	for i := range batch {
		batch[i] = aiproxy.Usage{Time: t0, UserID: 7, UserName: "x", Provider: "p", Path: "/v1/x", Status: 200, TotalTokens: ptr(int64(i))}
	}
	if err := d.InsertUsage(ctx, batch); err != nil {
		t.Fatalf("InsertUsage(2000) error = %v", err)
	}
	rows, err := d.Stats(ctx, aiproxy.StatsFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (aiproxy.StatsRow{Requests: 2000, TotalTokens: 1999 * 2000 / 2}); rows[0] != want {
		t.Errorf("Stats() after a 2000-record batch = %+v, want %+v", rows[0], want)
	}
	// Stored columns, read raw: nil tokens stay NULL, durations in ms,
	// a zero TTFB is NULL.
	d2 := newTestStore(t)
	if err := d2.InsertUsage(ctx, []aiproxy.Usage{
		{Time: t0, UserID: 1, UserName: "a", Provider: "p", Model: "m", Path: "/v1/x", Status: 200,
			Duration: 1234 * time.Millisecond, Streamed: true},
	}); err != nil {
		t.Fatal(err)
	}
	var ts, dur int64
	var prompt, ttfb *int64
	var streamed, partial bool
	err = openRaw(t, d2.Path()).QueryRowContext(ctx,
		"SELECT ts, duration_ms, prompt_tokens, ttfb_ms, streamed, partial FROM usage").Scan(&ts, &dur, &prompt, &ttfb, &streamed, &partial)
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		TS, Dur           int64
		Prompt, TTFB      *int64
		Streamed, Partial bool
	}
	if diff := cmp.Diff(stored{t0.UnixMilli(), 1234, nil, nil, true, false}, stored{ts, dur, prompt, ttfb, streamed, partial}); diff != "" {
		t.Errorf("stored usage row mismatch (-want +got):\n%s", diff)
	}
}

func TestUserUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	alice, bob := seedUsage(t, d)
	tests := []struct {
		name string
		id   int64
		want aiproxy.UsageTotals
	}{
		{"alice", alice.ID, aiproxy.UsageTotals{Requests: 3, PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18}},
		{"bob", bob.ID, aiproxy.UsageTotals{Requests: 3, PromptTokens: 107, CompletionTokens: 53, TotalTokens: 160}},
		{"unknown id", 999, aiproxy.UsageTotals{}},
	}
	for _, tc := range tests {
		got, err := d.UserUsage(ctx, tc.id)
		if err != nil {
			t.Fatalf("UserUsage(%s) error = %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("UserUsage(%s) mismatch (-want +got):\n%s", tc.name, diff)
		}
	}
}

// rollupFilters are stats queries over random ranges of a history of days
// days from retentionDay0: every grouping, with and without a user (one
// unknown), since nothing, day boundaries, and instants inside days
// (before, inside and after the history).
func rollupFilters(r *rand.Rand, days int) []aiproxy.StatsFilter {
	sinces := []time.Time{{}, retentionDay0.AddDate(0, 0, -3), retentionDay0.AddDate(0, 0, days+2)}
	for range 6 {
		sinces = append(sinces, retentionDay0.AddDate(0, 0, r.IntN(days)))
	}
	for range 10 {
		sinces = append(sinces, retentionDay0.Add(time.Duration(r.Int64N(int64(days)*int64(24*time.Hour)))).Truncate(time.Millisecond))
	}
	sinces = append(sinces, retentionDay0.AddDate(0, 0, 2).Add(time.Millisecond), retentionDay0.AddDate(0, 0, 3).Add(-time.Millisecond),
		retentionDay0.AddDate(0, 0, 1).Add(time.Microsecond)) // rounds down to the boundary, as ms(Since) does
	var fs []aiproxy.StatsFilter
	for _, by := range []string{"", aiproxy.ByUser, aiproxy.ByModel, aiproxy.ByProvider, aiproxy.ByDay} {
		for _, user := range []string{"", "bob", "carol", "nobody"} {
			for _, since := range sinces {
				fs = append(fs, aiproxy.StatsFilter{By: by, User: user, Since: since})
			}
		}
	}
	return fs
}

// insertLate stores n usage records at random instants of the first days
// days from retentionDay0, days that may be folded already: records the
// usage writer was late with, or a clock that was behind. Some carry what
// the limiter charged.
func insertLate(t *testing.T, d *store.DB, r *rand.Rand, n, days int) {
	t.Helper()
	batch := make([]aiproxy.Usage, n)
	for i := range batch {
		p, c := int64(r.IntN(500)), int64(r.IntN(500))
		tot := p + c
		cost := float64(r.IntN(1000)) / 1e6
		batch[i] = aiproxy.Usage{Time: retentionDay0.Add(time.Duration(r.Int64N(int64(days) * int64(24*time.Hour)))),
			UserID: 2, UserName: "bob", Provider: "api.groq.com", Model: "late", Path: "/v1/chat/completions",
			Status: []int{200, 429}[r.IntN(2)], Duration: time.Second, PromptTokens: &p, CompletionTokens: &c, TotalTokens: &tot,
			CostUSD: &cost, Partial: r.IntN(4) == 0, Unmetered: r.IntN(7) == 0, ChargedTokens: int64(r.IntN(3)) * 100,
			ChargedMicroUSD: int64(r.IntN(3)) * 5}
	}
	if err := d.InsertUsage(t.Context(), batch); err != nil {
		t.Fatalf("InsertUsage(late) error = %v", err)
	}
}

// checkStatsMatchRows holds Stats (daily roll-up for whole days) to
// StatsFromRows (the usage rows and folded days alone) over fs.
//
// Under the race detector it checks every raceDivisor-th filter, a
// different share at each stage, on histories raceDivisor times smaller;
// .ci/run also runs them whole without it.
func checkStatsMatchRows(t *testing.T, d *store.DB, stage string, fs []aiproxy.StatsFilter) {
	t.Helper()
	step, from := raceDivisor, len(stage)%raceDivisor
	for i := from; i < len(fs); i += step {
		f := fs[i]
		got, err := d.Stats(t.Context(), f)
		if err != nil {
			t.Fatalf("%s: Stats(%+v) error = %v", stage, f, err)
		}
		want, err := d.StatsFromRows(t.Context(), f)
		if err != nil {
			t.Fatalf("%s: StatsFromRows(%+v) error = %v", stage, f, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: Stats(by=%q user=%q since=%s) differs from the rows (-rows +rollup):\n%s",
				stage, f.By, f.User, f.Since.Format(time.RFC3339Nano), diff)
		}
	}
}

// TestStats_RollupSameAsRows: on random histories, stats read from the
// daily roll-up equal stats computed from the usage rows (and folded days),
// for every grouping, with and without --user, since day boundaries and
// instants inside days; before any folding, after folding some days in
// small chunks, after records arrive late for folded and unfolded days,
// and after folding everything.
func TestStats_RollupSameAsRows(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			const days = 12
			r := rand.New(rand.NewPCG(seed, 42))
			d := newTestStore(t)
			seedHistory(t, d, (1500+r.IntN(1500))/raceDivisor, days, seed)
			fs := rollupFilters(r, days)
			checkStatsMatchRows(t, d, "rows only", fs)

			// Fold a random number of days, part of the last one only.
			keep := time.Duration(2+r.IntN(days-3)) * 24 * time.Hour
			now := retentionDay0.AddDate(0, 0, days)
			if _, err := d.FoldUsage(t.Context(), store.FoldHorizon(now, keep), 50+r.IntN(200)); err != nil {
				t.Fatal(err)
			}
			checkStatsMatchRows(t, d, "one chunk folded", fs)
			if _, err := d.FoldOld(t.Context(), store.Retention{Keep: keep, Chunk: 77, Pause: time.Nanosecond,
				Now: func() time.Time { return now }}); err != nil {
				t.Fatal(err)
			}
			checkStatsMatchRows(t, d, "old days folded", fs)

			insertLate(t, d, r, 200, days)
			checkStatsMatchRows(t, d, "late records", fs)

			if _, err := d.FoldOld(t.Context(), store.Retention{Keep: 24 * time.Hour, Chunk: 500, Pause: time.Nanosecond,
				Now: func() time.Time { return now.AddDate(0, 0, 5) }}); err != nil {
				t.Fatal(err)
			}
			if n := usageRows(t, d); n != 0 {
				t.Fatalf("%d usage rows left, want all folded", n)
			}
			checkStatsMatchRows(t, d, "all folded", fs)
		})
	}
}

// rollupColumns are the totals usage_rollup keeps per day, user, provider
// and model; chargedColumns are those that retention's folding does not
// keep (usage_daily has no charged columns).
const (
	rollupColumns = `requests, errors, partial, unmetered, prompt_tokens, completion_tokens, total_tokens,
		reasoning_tokens, cached_tokens, duration_ms, cost_micro_usd`
	rowTotals = `COUNT(*), SUM(status >= 400), SUM(partial != 0), SUM(unmetered != 0), COALESCE(SUM(prompt_tokens), 0),
		COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0), COALESCE(SUM(reasoning_tokens), 0),
		COALESCE(SUM(cached_tokens), 0), SUM(duration_ms), SUM(cost_micro_usd)`
	chargedTotals = `SUM(CASE WHEN status < 400 THEN COALESCE(charged_tokens, total_tokens, 0) ELSE 0 END),
		SUM(CASE WHEN status < 400 THEN COALESCE(charged_micro_usd, cost_micro_usd, 0) ELSE 0 END)`
)

// dumpRows returns every row of query q as text, in order.
func dumpRows(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		// Each value on its own: PostgreSQL answers a SUM as text.
		out = append(out, fmt.Sprintln(vals...))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUsageRollup_IsRowsPlusFoldedDays: usage_rollup holds, per day, user,
// provider and model, exactly the totals of that day's usage rows plus
// its folded totals (usage_daily), every column, cost NULL while nothing
// was priced; and, before folding, what ChargedSince charges.
func TestUsageRollup_IsRowsPlusFoldedDays(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	r := rand.New(rand.NewPCG(9, 9))
	seedHistory(t, d, 2000, 8, 11)
	insertLate(t, d, r, 300, 8)
	raw := openRaw(t, d.Path())
	const key = "day, user_id, user_name, provider, model"
	fromRows := "SELECT (ts / 86400000) * 86400000 AS day, user_id, user_name, provider, model, " + rowTotals + ", " + chargedTotals +
		" FROM usage GROUP BY " + key + " ORDER BY " + key
	rollup := "SELECT " + key + ", " + rollupColumns + ", charged_tokens, charged_micro_usd FROM usage_rollup ORDER BY " + key
	want := dumpRows(t, raw, fromRows)
	if diff := cmp.Diff(want, dumpRows(t, raw, rollup)); diff != "" || len(want) == 0 {
		t.Fatalf("usage_rollup differs from the rows' totals (-rows +rollup):\n%s", diff)
	}

	now := retentionDay0.AddDate(0, 0, 8)
	if _, err := d.FoldOld(t.Context(), store.Retention{Keep: 3 * 24 * time.Hour, Chunk: 111, Pause: time.Nanosecond,
		Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	insertLate(t, d, r, 100, 8)
	both := "WITH t(" + key + ", " + rollupColumns + ") AS (" +
		"SELECT (ts / 86400000) * 86400000 AS day, user_id, user_name, provider, model, " + rowTotals + " FROM usage GROUP BY " + key +
		" UNION ALL SELECT " + key + ", " + rollupColumns + " FROM usage_daily) " +
		"SELECT " + key + ", SUM(requests), SUM(errors), SUM(partial), SUM(unmetered), SUM(prompt_tokens), SUM(completion_tokens), " +
		"SUM(total_tokens), SUM(reasoning_tokens), SUM(cached_tokens), SUM(duration_ms), SUM(cost_micro_usd) FROM t GROUP BY " + key +
		" ORDER BY " + key
	if diff := cmp.Diff(dumpRows(t, raw, both), dumpRows(t, raw, "SELECT "+key+", "+rollupColumns+" FROM usage_rollup ORDER BY "+key)); diff != "" {
		t.Errorf("after folding, usage_rollup differs from rows + usage_daily (-rows and folded +rollup):\n%s", diff)
	}
}

// TestMigration0009_RollsUpExistingHistory: a database from before
// migration 0009, with usage rows and folded days, gains a roll-up of both
// when it is opened, and stats answer as they did.
func TestMigration0009_RollsUpExistingHistory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	// Back to schema 0008: no roll-up table, no trigger.
	raw := openRaw(t, path)
	for _, q := range []string{"DROP TRIGGER usage_rollup_add", "DROP TABLE usage_rollup",
		"DELETE FROM schema_migrations WHERE name = '0009_usage_rollup.sql'"} {
		if _, err := raw.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	seedHistory(t, d, 2500/raceDivisor, 10, 5)
	now := retentionDay0.AddDate(0, 0, 10)
	if _, err := d.FoldOld(t.Context(), store.Retention{Keep: 4 * 24 * time.Hour, Chunk: 200, Pause: time.Nanosecond,
		Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	// Bob is user 2 and the only one of that name: his totals as the rows
	// and folded days give them.
	bob, err := d.StatsFromRows(t.Context(), aiproxy.StatsFilter{User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	before := aiproxy.UsageTotals{Requests: bob[0].Requests, PromptTokens: bob[0].PromptTokens,
		CompletionTokens: bob[0].CompletionTokens, TotalTokens: bob[0].TotalTokens}
	raw.Close()
	d.Close()

	d = openTestStore(t, path)
	checkStatsMatchRows(t, d, "after migration", rollupFilters(rand.New(rand.NewPCG(5, 5)), 10))
	after, err := d.UserUsage(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if after.Requests == 0 || after != before {
		t.Errorf("UserUsage(bob) = %+v after migration, want %+v", after, before)
	}
	insertLate(t, d, rand.New(rand.NewPCG(1, 1)), 50, 10)
	checkStatsMatchRows(t, d, "after migration and new records", rollupFilters(rand.New(rand.NewPCG(6, 6)), 10))
}

// TestStats_SearchesRangesNeverScans: whatever the grouping and user,
// stats since a day boundary or an instant inside a day search the range
// of days in usage_rollup (and usage_daily), and of ts in usage rows:
// no plan scans a whole table or index, so the time does not grow with
// the history.
func TestStats_SearchesRangesNeverScans(t *testing.T) {
	t.Parallel()
	store.SQLiteOnly(t) // SQLite's query plans
	d := newTestStore(t)
	raw := openRaw(t, d.Path())
	for _, by := range []string{"", aiproxy.ByUser, aiproxy.ByModel, aiproxy.ByProvider, aiproxy.ByDay} {
		for _, user := range []string{"", "bob"} {
			for _, since := range []time.Time{t0.Truncate(24 * time.Hour), t0} {
				f := aiproxy.StatsFilter{By: by, User: user, Since: since}
				q, args := store.StatsQuery(f)
				plan := dumpRows(t, raw, "EXPLAIN QUERY PLAN "+q, args...)
				for _, line := range plan {
					if strings.Contains(line, "SCAN usage") {
						t.Errorf("Stats(by=%q user=%q since=%s) plan scans: %q\n%s", by, user, since.Format(time.RFC3339), line,
							strings.Join(plan, "\n"))
					}
				}
			}
		}
	}
}
