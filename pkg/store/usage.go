package store

import (
	"context"
	"database/sql"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// InsertUsage writes a batch of usage records in one transaction; the
// usage_rollup_add trigger (migration 0009) adds each to its day's totals
// in the same transaction. Once these writes pause for IdleCheckpoint, the
// WAL is checkpointed and truncated.
func (d *DB) InsertUsage(ctx context.Context, batch []aiproxy.Usage) error {
	if len(batch) == 0 {
		return nil
	}
	defer d.ckpt.touch()
	if d.pg {
		return d.write(ctx, func(tx *sql.Tx) error { return insertUsageRows(ctx, tx, batch) })
	}
	return d.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, insertUsage+usageValues)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, u := range batch {
			if _, err := stmt.ExecContext(ctx, usageArgs(nil, u)...); err != nil {
				return err
			}
		}
		return nil
	})
}

const (
	insertUsage = `INSERT INTO usage (ts, user_id, user_name, provider, model, path, status,
			prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens,
			duration_ms, ttfb_ms, streamed, partial, cost_micro_usd, unmetered, charged_tokens, charged_micro_usd)
			VALUES `
	usageValues = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0))"
	// usageRowsPerInsert bounds a multi-row INSERT: 64 rows are 1280
	// arguments, and the statement texts (one per row count up to it)
	// stay few enough to stay prepared.
	usageRowsPerInsert = 64
)

// usageArgs appends u's values, in usageValues' order, to args.
func usageArgs(args []any, u aiproxy.Usage) []any {
	var ttfb sql.NullInt64
	if u.TTFB > 0 {
		ttfb = sql.NullInt64{Int64: u.TTFB.Milliseconds(), Valid: true}
	}
	return append(args, ms(u.Time), u.UserID, u.UserName, u.Provider, u.Model, u.Path, u.Status,
		u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.ReasoningTokens, u.CachedTokens,
		u.Duration.Milliseconds(), ttfb, u.Streamed, u.Partial, costMicroUSD(u.CostUSD), u.Unmetered,
		u.ChargedTokens, u.ChargedMicroUSD)
}

// insertUsageRows writes batch with multi-row INSERTs, usageRowsPerInsert
// rows per round trip: on PostgreSQL each statement is one, where SQLite's
// row-at-a-time inserts cost microseconds each.
func insertUsageRows(ctx context.Context, tx *sql.Tx, batch []aiproxy.Usage) error {
	var args []any
	for len(batch) > 0 {
		n := min(len(batch), usageRowsPerInsert)
		args = args[:0]
		for _, u := range batch[:n] {
			args = usageArgs(args, u)
		}
		q := insertUsage + usageValues + strings.Repeat(", "+usageValues, n-1)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// groupExpr maps a StatsFilter.By value to its SQL expression over usage
// rows, and dayGroupExpr over daily totals (usage_rollup, usage_daily).
// Only these fixed strings reach the query text; values go in as arguments.
var (
	groupExpr = map[string]string{
		aiproxy.ByUser:     "user_name",
		aiproxy.ByModel:    "model",
		aiproxy.ByProvider: "provider",
		aiproxy.ByDay:      "strftime('%Y-%m-%d', ts / 1000, 'unixepoch')",
	}
	dayGroupExpr = map[string]string{
		aiproxy.ByUser:     "user_name",
		aiproxy.ByModel:    "model",
		aiproxy.ByProvider: "provider",
		aiproxy.ByDay:      "strftime('%Y-%m-%d', day / 1000, 'unixepoch')",
	}
)

// The stats columns after the group key: requests, errors, partial, prompt,
// completion and total tokens, cost in micro-dollars (NULL while no record
// was priced) and unmetered; summed over usage rows, or over daily totals.
const (
	rowSums = `COUNT(*), COALESCE(SUM(status >= 400), 0), COALESCE(SUM(partial), 0),
		COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0),
		SUM(cost_micro_usd), COALESCE(SUM(unmetered), 0)`
	daySums = `COALESCE(SUM(requests), 0), COALESCE(SUM(errors), 0), COALESCE(SUM(partial), 0),
		COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0),
		SUM(cost_micro_usd), COALESCE(SUM(unmetered), 0)`
)

// Stats returns usage totals, grouped by f.By (one totals row when f.By is
// empty), for records of f.User since f.Since. Errors are requests whose
// status was 400 or above. Groups are ordered by key.
//
// Whole days come from usage_rollup, the daily totals of every record
// (migration 0009), whatever the number of rows. A --since inside a day
// reads that day's rows from f.Since on, plus the day's folded totals
// (usage_daily) whole: their rows are gone, and the totals are all there
// is. So the answer is the one the usage rows and usage_daily give
// together, before and after retention folds them.
func (d *DB) Stats(ctx context.Context, f aiproxy.StatsFilter) ([]aiproxy.StatsRow, error) {
	if f.By != "" {
		if _, ok := groupExpr[f.By]; !ok {
			return nil, aiproxy.Errorf(aiproxy.EINVALID, "cannot group by %q: want user, model, provider or day", f.By)
		}
	}
	q, args := statsQuery(f)
	rows, err := d.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	out := []aiproxy.StatsRow{}
	for rows.Next() {
		var r aiproxy.StatsRow
		var cost sql.NullInt64 // NULL: no record of the group was priced
		if err := rows.Scan(&r.Key, &r.Requests, &r.Errors, &r.Partial, &r.PromptTokens, &r.CompletionTokens, &r.TotalTokens,
			&cost, &r.Unmetered); err != nil {
			return nil, err
		}
		r.CostUSD = fromMicroUSD(cost)
		out = append(out, r)
	}
	return out, dbError(rows.Err())
}

// statsQuery is Stats' query and its arguments (f.By already checked).
func statsQuery(f aiproxy.StatsFilter) (string, []any) {
	var parts []string
	var args []any
	// part adds one source's sums, grouped by the key when f.By is set,
	// with f.User and the conditions conds (arguments in condArgs).
	part := func(table, sums string, keys map[string]string, conds []string, condArgs ...any) {
		key := "''"
		if f.By != "" {
			// || '': an expression, not a column, so that no index
			// serves the grouping and the planner searches the range
			// of days (or of ts, for rows) instead of scanning all of
			// usage_rollup_user_name_day (or usage_user_name_ts) in
			// name order. PostgreSQL reads it the same way.
			key = keys[f.By] + " || ''"
		}
		if f.User != "" {
			conds = append([]string{"user_name = ?"}, conds...)
			args = append(args, f.User)
		}
		args = append(args, condArgs...)
		q := "SELECT " + key + " AS k, " + sums + " FROM " + table
		if len(conds) > 0 {
			q += " WHERE " + strings.Join(conds, " AND ")
		}
		if f.By != "" {
			q += " GROUP BY k"
		}
		parts = append(parts, q)
	}
	switch since, first := ms(f.Since), ms(floorDay(f.Since)); {
	case f.Since.IsZero():
		part("usage_rollup", daySums, dayGroupExpr, nil)
	case since == first: // a day boundary: whole days only
		part("usage_rollup", daySums, dayGroupExpr, []string{"day >= ?"}, since)
	default: // the rest of the first day, then whole days
		next := first + dayMS
		part("usage", rowSums, groupExpr, []string{"ts >= ?", "ts < ?"}, since, next)
		part("usage_daily", daySums, dayGroupExpr, []string{"day = ?"}, first)
		part("usage_rollup", daySums, dayGroupExpr, []string{"day >= ?"}, next)
	}
	key := "k"
	if f.By == "" {
		key = "''" // one totals row; PostgreSQL wants no bare column beside the sums
	}
	q := "WITH t(k, n, e, p, pt, ct, tt, cost, unm) AS (" + strings.Join(parts, " UNION ALL ") +
		") SELECT " + key + ", SUM(n), SUM(e), SUM(p), SUM(pt), SUM(ct), SUM(tt), SUM(cost), SUM(unm) FROM t"
	if f.By != "" {
		q += " GROUP BY k ORDER BY k"
	}
	return q, args
}

// dayMS is a day in Unix milliseconds: usage_rollup and usage_daily key
// their days by (ts / dayMS) * dayMS.
const dayMS = 86_400_000

// UserUsage returns the usage totals of one user (by id, so a re-created
// user does not inherit a deleted one's records), folded days included:
// usage_rollup holds them all.
func (d *DB) UserUsage(ctx context.Context, userID int64) (aiproxy.UsageTotals, error) {
	var t aiproxy.UsageTotals
	err := d.sql.QueryRowContext(ctx, `SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(prompt_tokens), 0),
		COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0) FROM usage_rollup WHERE user_id = ?`, userID).
		Scan(&t.Requests, &t.PromptTokens, &t.CompletionTokens, &t.TotalTokens)
	return t, dbError(err)
}
