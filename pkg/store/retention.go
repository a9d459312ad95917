package store

import (
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// Retention is how serve bounds the usage table: rows of the days older
// than Keep are folded into daily totals (usage_daily: per UTC day, user,
// provider and model, keeping requests, errors, partial and unmetered
// counts, tokens, duration and cost), then deleted. usage_rollup, the
// daily totals of all records that Stats reads for whole days, does not
// change, and Stats reads usage_daily beside the rows for a --since inside
// a day, so its answers for a range starting at 00:00 UTC do not change.
type Retention struct {
	// Keep is how long usage rows are kept whole; at least MinRetention.
	Keep time.Duration
	// Every is how often serve looks for rows to fold (default 1 h).
	Every time.Duration
	// Chunk is the most rows folded in one transaction (default 500):
	// each holds the write lock for a few milliseconds only, so that
	// usage inserts and admin writes wait no longer than that.
	Chunk int
	// Pause is the wait between two chunks (default 20 ms), which lets
	// the writers queued on the lock take it.
	Pause time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives a line per pass that folded something, and errors.
	Log *slog.Logger
}

// MinRetention is the shortest --usage-retention: rows of the current day
// are never folded.
const MinRetention = 24 * time.Hour

// DefaultRetention is serve's --usage-retention default.
const DefaultRetention = 400 * 24 * time.Hour

// CheckRetention refuses a retention shorter than MinRetention.
func CheckRetention(keep time.Duration) error {
	if keep < MinRetention {
		return aiproxy.Errorf(aiproxy.EINVALID, "usage retention %s is below the minimum of 1 day (1d)", keep)
	}
	return nil
}

// FoldHorizon is where folding stops for keep at now: 00:00 UTC of the day
// that now-keep falls in. Rows before it are folded; whole days only.
func FoldHorizon(now time.Time, keep time.Duration) time.Time {
	return floorDay(now.Add(-keep))
}

func floorDay(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// RunRetention folds old usage rows every r.Every until ctx ends, starting
// at once. It returns ctx's error.
func (d *DB) RunRetention(ctx context.Context, r Retention) error {
	if err := CheckRetention(r.Keep); err != nil {
		return err
	}
	if r.Every <= 0 {
		r.Every = time.Hour
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Log == nil {
		r.Log = d.log
	}
	for {
		start := r.Now()
		n, err := d.FoldOld(ctx, r)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			r.Log.Error("usage retention", "err", err)
		case n > 0:
			r.Log.Info("usage rows folded into daily totals", "rows", n,
				"before", FoldHorizon(start, r.Keep).Format(time.DateOnly), "dur_ms", r.Now().Sub(start).Milliseconds())
		}
		t := time.NewTimer(r.Every)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// FoldOld folds every usage row older than FoldHorizon(r.Now(), r.Keep),
// r.Chunk rows per transaction with r.Pause between them, and returns how
// many it folded. It stops early when ctx ends.
//
// On PostgreSQL every instance runs the retention, and one pass at a time
// is enough: a pass holds an advisory lock, and a pass that finds another
// instance's holding it folds nothing and returns 0 at once. (Two passes
// at once would fold correctly, each chunk being one transaction under the
// write lock, but would take that lock twice as often for nothing.)
func (d *DB) FoldOld(ctx context.Context, r Retention) (int, error) {
	if d.pg {
		unlock, ok, err := d.pgTryLock(ctx, pgLockRetention)
		if err != nil || !ok {
			return 0, err
		}
		defer unlock()
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Chunk <= 0 {
		r.Chunk = 500
	}
	if r.Pause <= 0 {
		r.Pause = 20 * time.Millisecond
	}
	before := FoldHorizon(r.Now(), r.Keep)
	total := 0
	for {
		n, err := d.FoldUsage(ctx, before, r.Chunk)
		total += n
		if err != nil || n < r.Chunk {
			return total, err
		}
		t := time.NewTimer(r.Pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return total, ctx.Err()
		case <-t.C:
		}
	}
}

// FoldUsage folds up to limit of the oldest usage rows before before (which
// it rounds down to 00:00 UTC) into usage_daily, and deletes them, in one
// transaction. It returns how many rows it folded.
func (d *DB) FoldUsage(ctx context.Context, before time.Time, limit int) (int, error) {
	cost, unmetered, err := d.usageExtras(ctx)
	if err != nil {
		return 0, err
	}
	// The oldest rows first, by the ts index; ties broken by id so that
	// the INSERT and the DELETE pick the same rows.
	pick := "SELECT id FROM usage WHERE ts < ?1 ORDER BY ts, id LIMIT ?2"
	q := `INSERT INTO usage_daily AS d (day, user_id, user_name, provider, model, requests, errors, partial, unmetered,
			prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens, duration_ms, cost_micro_usd)
		SELECT (ts / 86400000) * 86400000, user_id, user_name, provider, model, COUNT(*), SUM(status >= 400), SUM(partial != 0),
			` + unmetered + `, COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0),
			COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cached_tokens), 0), SUM(duration_ms), ` + cost + `
		FROM usage WHERE id IN (` + pick + `)
		GROUP BY 1, user_id, user_name, provider, model
		ON CONFLICT (day, user_id, user_name, provider, model) DO UPDATE SET
			requests = d.requests + excluded.requests,
			errors = d.errors + excluded.errors,
			partial = d.partial + excluded.partial,
			unmetered = d.unmetered + excluded.unmetered,
			prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
			completion_tokens = d.completion_tokens + excluded.completion_tokens,
			total_tokens = d.total_tokens + excluded.total_tokens,
			reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
			cached_tokens = d.cached_tokens + excluded.cached_tokens,
			duration_ms = d.duration_ms + excluded.duration_ms,
			cost_micro_usd = CASE WHEN d.cost_micro_usd IS NULL THEN excluded.cost_micro_usd
				WHEN excluded.cost_micro_usd IS NULL THEN d.cost_micro_usd
				ELSE d.cost_micro_usd + excluded.cost_micro_usd END`
	var n int64
	err = d.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, q, ms(floorDay(before)), limit); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM usage WHERE id IN ("+pick+")", ms(floorDay(before)), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// usageExtras returns the SQL that sums the cost and unmetered columns of
// usage rows, or constants when this schema's usage table has no such
// column, so that folding works whichever migrations are applied.
func (d *DB) usageExtras(ctx context.Context) (cost, unmetered string, err error) {
	if d.pg { // PostgreSQL's schema has had both from its first version
		return "SUM(cost_micro_usd)", "SUM(unmetered != 0)", nil
	}
	rows, err := d.sql.QueryContext(ctx, "SELECT name FROM pragma_table_info('usage')")
	if err != nil {
		return "", "", dbError(err)
	}
	defer rows.Close()
	cols := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return "", "", err
		}
		cols[strings.ToLower(name)] = true
	}
	cost, unmetered = "NULL", "0"
	if cols["cost_micro_usd"] {
		cost = "SUM(cost_micro_usd)"
	}
	if cols["unmetered"] {
		unmetered = "SUM(unmetered != 0)"
	}
	return cost, unmetered, rows.Err()
}
