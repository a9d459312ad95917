package cmd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/aiproxy/aiproxy/pkg/admin"
)

// statsRow is a decoded `stats --json` row; a nil key field was absent.
type statsRow struct {
	User             *string `json:"user"`
	Model            *string `json:"model"`
	Provider         *string `json:"provider"`
	Day              *string `json:"day"`
	Requests         int64   `json:"requests"`
	Errors           int64   `json:"errors"`
	Partial          int64   `json:"partial"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TotalTokens      int64   `json:"total_tokens"`
}

func str(s string) *string { return &s }

func TestStats(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	// seedGolden's usage, by day:
	//   01-02 alice openai gpt-4o 200 1200+300; alice openai gpt-4o-mini 200 100+50
	//   01-03 alice openai gpt-4o 500 (no usage); bob groq llama 200 600+200
	//   01-04 bob groq llama 200 40+10 (partial); bob groq "" 429 (no usage)
	tests := []struct {
		name string
		args []string
		want []statsRow
	}{
		{"totals", nil, []statsRow{
			{Requests: 6, Errors: 2, Partial: 1, PromptTokens: 1940, CompletionTokens: 560, TotalTokens: 2500},
		}},
		{"by user", []string{"--by", "user"}, []statsRow{
			{User: str("alice"), Requests: 3, Errors: 1, PromptTokens: 1300, CompletionTokens: 350, TotalTokens: 1650},
			{User: str("bob"), Requests: 3, Errors: 1, Partial: 1, PromptTokens: 640, CompletionTokens: 210, TotalTokens: 850},
		}},
		{"by model", []string{"--by", "model"}, []statsRow{
			{Model: str(""), Requests: 1, Errors: 1},
			{Model: str("gpt-4o"), Requests: 2, Errors: 1, PromptTokens: 1200, CompletionTokens: 300, TotalTokens: 1500},
			{Model: str("gpt-4o-mini"), Requests: 1, PromptTokens: 100, CompletionTokens: 50, TotalTokens: 150},
			{Model: str("llama-3.3-70b"), Requests: 2, Partial: 1, PromptTokens: 640, CompletionTokens: 210, TotalTokens: 850},
		}},
		{"by provider", []string{"--by", "provider"}, []statsRow{
			{Provider: str("api.groq.com"), Requests: 3, Errors: 1, Partial: 1, PromptTokens: 640, CompletionTokens: 210, TotalTokens: 850},
			{Provider: str("api.openai.com"), Requests: 3, Errors: 1, PromptTokens: 1300, CompletionTokens: 350, TotalTokens: 1650},
		}},
		{"by day", []string{"--by", "day"}, []statsRow{
			{Day: str("2025-01-02"), Requests: 2, PromptTokens: 1300, CompletionTokens: 350, TotalTokens: 1650},
			{Day: str("2025-01-03"), Requests: 2, Errors: 1, PromptTokens: 600, CompletionTokens: 200, TotalTokens: 800},
			{Day: str("2025-01-04"), Requests: 2, Errors: 1, Partial: 1, PromptTokens: 40, CompletionTokens: 10, TotalTokens: 50},
		}},
		{"one user", []string{"--user", "alice"}, []statsRow{
			{Requests: 3, Errors: 1, PromptTokens: 1300, CompletionTokens: 350, TotalTokens: 1650},
		}},
		{"one user by model", []string{"--user", "bob", "--by", "model"}, []statsRow{
			{Model: str(""), Requests: 1, Errors: 1},
			{Model: str("llama-3.3-70b"), Requests: 2, Partial: 1, PromptTokens: 640, CompletionTokens: 210, TotalTokens: 850},
		}},
		{"since a date", []string{"--since", "2025-01-03", "--by", "user"}, []statsRow{
			{User: str("alice"), Requests: 1, Errors: 1},
			{User: str("bob"), Requests: 3, Errors: 1, Partial: 1, PromptTokens: 640, CompletionTokens: 210, TotalTokens: 850},
		}},
		{"since an RFC 3339 time", []string{"--since", "2025-01-04T10:00:00Z"}, []statsRow{
			{Requests: 1, Errors: 1},
		}},
		{"since a duration: nothing recent", []string{"--since", "1h"}, []statsRow{
			{},
		}},
		{"since a duration, grouped: no rows", []string{"--since", "1h", "--by", "day"}, []statsRow{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := runOK(t, append([]string{"--db", db, "stats", "--json"}, tc.args...)...)
			var got []statsRow
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("stats --json %v: %v\n%s", tc.args, err, out)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("stats --json %v (-want +got):\n%s", tc.args, diff)
			}
		})
	}
}

// TestStats_jsonKeys checks the exact field names of each row shape.
func TestStats_jsonKeys(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	totals := []string{"completion_tokens", "cost_usd", "errors", "partial", "prompt_tokens", "requests", "total_tokens", "unmetered"}
	for _, by := range []string{"", "user", "model", "provider", "day"} {
		args := []string{"--db", db, "stats", "--json"}
		want := totals
		if by != "" {
			args = append(args, "--by", by)
			want = append([]string{by}, totals...)
		}
		var rows []map[string]any
		if err := json.Unmarshal([]byte(runOK(t, args...)), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			t.Fatalf("stats --by %q: no rows", by)
		}
		for _, row := range rows {
			var got []string
			for k := range row {
				got = append(got, k)
			}
			if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("stats --json --by %q row keys (-want +got):\n%s", by, diff)
			}
		}
	}
}

func TestStats_golden(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	checkGolden(t, "stats", runOK(t, "--db", db, "stats"))
	checkGolden(t, "stats_by_model", runOK(t, "--db", db, "stats", "--by", "model"))
	checkGolden(t, "stats_by_day", runOK(t, "--db", db, "stats", "--by", "day"))
	checkGolden(t, "stats_by_day_json", runOK(t, "--db", db, "stats", "--by", "day", "--json"))

	// On a terminal, --by day adds a bar chart of total tokens.
	rows, err := openService(t, db).Stats(t.Context(), admin.StatsQuery{By: "day"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := withBars(statsListing(rows, "day"), rows, 24).writeTable(&buf, lipgloss.NewRenderer(&buf)); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "stats_by_day_table", buf.String())
}

func TestStats_errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown --by", []string{"stats", "--by", "week"}, `cannot group by "week": want user, model, provider or day`},
		{"bad --since", []string{"stats", "--since", "yesterday"}, `invalid time "yesterday"`},
		{"negative --since", []string{"stats", "--since", "-3d"}, `invalid time "-3d"`},
		{"an argument", []string{"stats", "alice"}, `stats: unexpected argument "alice"`},
		{"unknown user", []string{"stats", "--user", "nobody"}, `user "nobody" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			seedGolden(t, db)
			before := snapshot(t, db)
			checkFailed(t, run(t, "", append([]string{"--db", db}, tc.args...)...), tc.want)
			if diff := cmp.Diff(before, snapshot(t, db)); diff != "" {
				t.Errorf("aiproxy %s changed the database (-before +after):\n%s", strings.Join(tc.args, " "), diff)
			}
		})
	}
}
