package admin_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func TestStatsJSON(t *testing.T) {
	t.Parallel()
	row := aiproxy.StatsRow{Requests: 3, Errors: 1, Partial: 2, PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18}
	totals := `"requests":3,"errors":1,"partial":2,"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost_usd":null,"unmetered":0}`
	cost := 0.00925
	priced := row
	priced.CostUSD, priced.Unmetered = &cost, 2
	keyed := func(k string) aiproxy.StatsRow { r := row; r.Key = k; return r }
	tests := []struct {
		name string
		by   string
		rows []aiproxy.StatsRow
		want string
	}{
		{"no rows", "user", nil, `[]`},
		{"totals", "", []aiproxy.StatsRow{row}, `[{` + totals + `]`},
		{"by user", "user", []aiproxy.StatsRow{keyed("alice"), keyed("bob")}, `[{"user":"alice",` + totals + `,{"user":"bob",` + totals + `]`},
		{"by day", "day", []aiproxy.StatsRow{keyed("2025-01-02")}, `[{"day":"2025-01-02",` + totals + `]`},
		{"empty model", "model", []aiproxy.StatsRow{keyed("")}, `[{"model":"",` + totals + `]`},
		{"quoted key", "model", []aiproxy.StatsRow{keyed(`a"b\c`)}, `[{"model":"a\"b\\c",` + totals + `]`},
		{"priced, 6 decimals", "", []aiproxy.StatsRow{priced},
			`[{"requests":3,"errors":1,"partial":2,"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost_usd":0.009250,"unmetered":2}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(admin.StatsJSON(tc.by, tc.rows))
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if diff := cmp.Diff(tc.want, string(b)); diff != "" {
				t.Errorf("StatsJSON(%q) (-want +got):\n%s", tc.by, diff)
			}
		})
	}
}
