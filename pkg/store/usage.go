package store

import (
	"context"
	"database/sql"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// InsertUsage writes a batch of usage records in one transaction. Once
// these writes pause for IdleCheckpoint, the WAL is checkpointed and
// truncated.
func (d *DB) InsertUsage(ctx context.Context, batch []aiproxy.Usage) error {
	if len(batch) == 0 {
		return nil
	}
	defer d.ckpt.touch()
	return d.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO usage (ts, user_id, user_name, provider, model, path, status,
			prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens,
			duration_ms, ttfb_ms, streamed, partial, cost_micro_usd, unmetered, charged_tokens, charged_micro_usd)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0))`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, u := range batch {
			var ttfb sql.NullInt64
			if u.TTFB > 0 {
				ttfb = sql.NullInt64{Int64: u.TTFB.Milliseconds(), Valid: true}
			}
			if _, err := stmt.ExecContext(ctx, ms(u.Time), u.UserID, u.UserName, u.Provider, u.Model, u.Path, u.Status,
				u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.ReasoningTokens, u.CachedTokens,
				u.Duration.Milliseconds(), ttfb, u.Streamed, u.Partial, costMicroUSD(u.CostUSD), u.Unmetered,
				u.ChargedTokens, u.ChargedMicroUSD); err != nil {
				return err
			}
		}
		return nil
	})
}

// groupExpr maps a StatsFilter.By value to its SQL expression. Only these
// fixed strings reach the query text; values go in as arguments.
var groupExpr = map[string]string{
	aiproxy.ByUser:     "user_name",
	aiproxy.ByModel:    "model",
	aiproxy.ByProvider: "provider",
	aiproxy.ByDay:      "strftime('%Y-%m-%d', ts / 1000, 'unixepoch')",
}

// Stats returns usage totals, grouped by f.By (one totals row when f.By is
// empty), for records of f.User since f.Since. Errors are requests whose
// status was 400 or above. Groups are ordered by key.
func (d *DB) Stats(ctx context.Context, f aiproxy.StatsFilter) ([]aiproxy.StatsRow, error) {
	key := "''"
	if f.By != "" {
		expr, ok := groupExpr[f.By]
		if !ok {
			return nil, aiproxy.Errorf(aiproxy.EINVALID, "cannot group by %q: want user, model, provider or day", f.By)
		}
		key = expr
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
	q := "SELECT " + key + ` AS k, COUNT(*), COALESCE(SUM(status >= 400), 0), COALESCE(SUM(partial), 0),
		COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0),
		SUM(cost_micro_usd), COALESCE(SUM(unmetered), 0)
		FROM usage`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.By != "" {
		q += " GROUP BY k"
	}
	q, args = withDailyTotals(q, args, f) // and the rows that retention folded (retention.go)
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

// UserUsage returns the usage totals of one user (by id, so a re-created
// user does not inherit a deleted one's records), folded days included.
func (d *DB) UserUsage(ctx context.Context, userID int64) (aiproxy.UsageTotals, error) {
	var t aiproxy.UsageTotals
	err := d.sql.QueryRowContext(ctx, `SELECT SUM(n), SUM(p), SUM(c), SUM(t) FROM (
		SELECT COUNT(*) AS n, COALESCE(SUM(prompt_tokens), 0) AS p,
			COALESCE(SUM(completion_tokens), 0) AS c, COALESCE(SUM(total_tokens), 0) AS t FROM usage WHERE user_id = ?1
		UNION ALL
		SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(prompt_tokens), 0),
			COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0) FROM usage_daily WHERE user_id = ?1)`, userID).
		Scan(&t.Requests, &t.PromptTokens, &t.CompletionTokens, &t.TotalTokens)
	return t, dbError(err)
}
