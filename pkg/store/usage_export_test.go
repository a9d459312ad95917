package store

import (
	"context"
	"database/sql"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// StatsFromRows is Stats as it was before usage_rollup (migration 0009):
// computed from the usage rows and the folded days (usage_daily) alone. The
// tests hold Stats to it.
func (d *DB) StatsFromRows(ctx context.Context, f aiproxy.StatsFilter) ([]aiproxy.StatsRow, error) {
	key := "''"
	if f.By != "" {
		key = groupExpr[f.By]
	}
	var where []string
	var args []any
	if f.User != "" {
		where = append(where, "user_name = ?")
		args = append(args, f.User)
	}
	if !f.Since.IsZero() {
		where = append(where, "ts >= ?")
		args = append(args, ms(f.Since))
	}
	raw := "SELECT " + key + " AS k, " + rowSums + " FROM usage"
	if len(where) > 0 {
		raw += " WHERE " + strings.Join(where, " AND ")
	}
	if f.By != "" {
		raw += " GROUP BY k"
	}
	// The folded days: a --since inside one counts it whole.
	dkey := "''"
	if f.By != "" {
		dkey = dayGroupExpr[f.By]
	}
	where = where[:0]
	if f.User != "" {
		where = append(where, "user_name = ?")
		args = append(args, f.User)
	}
	if !f.Since.IsZero() {
		where = append(where, "day >= ?")
		args = append(args, ms(floorDay(f.Since)))
	}
	daily := "SELECT " + dkey + " AS k, " + daySums + " FROM usage_daily"
	if len(where) > 0 {
		daily += " WHERE " + strings.Join(where, " AND ")
	}
	if f.By != "" {
		daily += " GROUP BY k"
	}
	q := "WITH t(k, n, e, p, pt, ct, tt, cost, unm) AS (" + raw + " UNION ALL " + daily +
		") SELECT " + map[bool]string{true: "''", false: "k"}[f.By == ""] + ", SUM(n), SUM(e), SUM(p), SUM(pt), SUM(ct), SUM(tt), SUM(cost), SUM(unm) FROM t"
	if f.By != "" {
		q += " GROUP BY k ORDER BY k"
	}
	rows, err := d.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	out := []aiproxy.StatsRow{}
	for rows.Next() {
		var r aiproxy.StatsRow
		var cost sql.NullInt64
		if err := rows.Scan(&r.Key, &r.Requests, &r.Errors, &r.Partial, &r.PromptTokens, &r.CompletionTokens, &r.TotalTokens,
			&cost, &r.Unmetered); err != nil {
			return nil, err
		}
		r.CostUSD = fromMicroUSD(cost)
		out = append(out, r)
	}
	return out, dbError(rows.Err())
}

// StatsQuery is the query Stats runs for f, and its arguments.
var StatsQuery = statsQuery
