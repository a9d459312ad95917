package store_test

import (
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
