package admin

import (
	"encoding/json"
	"strconv"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// StatsJSONRow is one stats row in the JSON shape that `aiproxy stats
// --json` and GET /{token}/stats share: the grouping field named after By
// ("user", "model", "provider" or "day") first, absent for an ungrouped
// totals row, then "requests", "errors", "partial", "prompt_tokens",
// "completion_tokens", "total_tokens", "cost_usd" (6 decimals, null when
// no record of the group was priced) and "unmetered", always in that order.
type StatsJSONRow struct {
	By string
	aiproxy.StatsRow
}

// StatsJSON returns rows, grouped by by, in their shared JSON shape. The
// result is never nil, so an empty result marshals as [].
func StatsJSON(by string, rows []aiproxy.StatsRow) []StatsJSONRow {
	out := make([]StatsJSONRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, StatsJSONRow{By: by, StatsRow: r})
	}
	return out
}

// MarshalJSON writes the row with its keys in a fixed order.
func (r StatsJSONRow) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 160)
	b = append(b, '{')
	if r.By != "" {
		k, err := json.Marshal(r.By)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(r.Key)
		if err != nil {
			return nil, err
		}
		b = append(append(append(append(b, k...), ':'), v...), ',')
	}
	for i, f := range []struct {
		name string
		v    int64
	}{
		{"requests", r.Requests},
		{"errors", r.Errors},
		{"partial", r.Partial},
		{"prompt_tokens", r.PromptTokens},
		{"completion_tokens", r.CompletionTokens},
		{"total_tokens", r.TotalTokens},
	} {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, f.name...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, f.v, 10)
	}
	b = append(b, `,"cost_usd":`...)
	if r.CostUSD == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendFloat(b, *r.CostUSD, 'f', 6, 64)
	}
	b = append(b, `,"unmetered":`...)
	b = strconv.AppendInt(b, r.Unmetered, 10)
	return append(b, '}'), nil
}
