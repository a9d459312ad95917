package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// DefaultsName is the name under which the defaults are set (`user limit
// '*'`); they are stored as user id DefaultsID.
const (
	DefaultsName       = "*"
	DefaultsID   int64 = 0
)

// UpdateLimits changes the limits of user name (DefaultsName: the
// defaults) in one transaction: fn gets the current own limits (nil when
// the user has none) and returns the new ones (nil: remove them, so that
// the defaults apply again). An error from fn changes nothing and is
// returned as is. It returns ENOTFOUND for a missing user.
func (d *DB) UpdateLimits(ctx context.Context, name string, now time.Time,
	fn func(cur *aiproxy.Limits) (*aiproxy.Limits, error)) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		id := DefaultsID
		if name != DefaultsName {
			err := tx.QueryRowContext(ctx, "SELECT id FROM users WHERE name = ?", name).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				return aiproxy.Errorf(aiproxy.ENOTFOUND, "user %s not found", name)
			}
			if err != nil {
				return err
			}
		}
		cur, err := scanLimits(tx.QueryRowContext(ctx, "SELECT "+limitsColumns+" FROM limits WHERE user_id = ?", id))
		if errors.Is(err, sql.ErrNoRows) {
			cur, err = nil, nil
		}
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if next == nil {
			_, err = tx.ExecContext(ctx, "DELETE FROM limits WHERE user_id = ?", id)
		} else {
			args, err := limitsArgs(next)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO limits (user_id, `+limitsColumns+`, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (user_id) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm,
				concurrent = excluded.concurrent, tokens = excluded.tokens, tokens_period = excluded.tokens_period,
				spend_micro_usd = excluded.spend_micro_usd, spend_period = excluded.spend_period,
				models = excluded.models, updated_at = excluded.updated_at`,
				append(append([]any{id}, args...), ms(now))...)
			if err != nil {
				return err
			}
		}
		if err == nil && d.pg {
			err = dropUnusedCounters(ctx, tx, id)
		}
		return err
	})
}

// dropUnusedCounters deletes the shared budget counters (PostgreSQL's
// limit_used, migration 0010) of user id, or of every user that the
// defaults apply to when id is DefaultsID, whose limits in force now have
// no such budget. A counter counts only while its budget is set: requests
// made without one add nothing to it, so a budget set again later must
// start from the usage rows, not from a count that missed them.
func dropUnusedCounters(ctx context.Context, tx *sql.Tx, id int64) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM limit_used AS u
		WHERE (u.user_id = ? OR ? = 0) AND NOT EXISTS (
			SELECT 1 FROM limits AS l
			WHERE l.user_id = COALESCE((SELECT o.user_id FROM limits AS o WHERE o.user_id = u.user_id), 0)
				AND CASE u.kind WHEN 'tokens' THEN l.tokens IS NOT NULL ELSE l.spend_micro_usd IS NOT NULL END)`,
		id, id)
	return err
}

// AllLimits returns every user's own limits by user id, and the defaults
// (nil when none are set).
func (d *DB) AllLimits(ctx context.Context) (own map[int64]*aiproxy.Limits, defaults *aiproxy.Limits, err error) {
	rows, err := d.sql.QueryContext(ctx, "SELECT user_id, "+limitsColumns+" FROM limits")
	if err != nil {
		return nil, nil, dbError(err)
	}
	defer rows.Close()
	own = map[int64]*aiproxy.Limits{}
	for rows.Next() {
		var id int64
		l, err := scanLimits(idScanner{rows, &id})
		if err != nil {
			return nil, nil, err
		}
		if id == DefaultsID {
			defaults = l
		} else {
			own[id] = l
		}
	}
	return own, defaults, dbError(rows.Err())
}

// LimitsVersion is a number that changes with every commit that changes
// limits (and users, providers and prices: they share migration 0002's
// auth_version). It reads no database: it is the counter as the last user
// or provider lookup read it, and the proxy looks its user up first on
// every request, so it is the value as of this request.
func (d *DB) LimitsVersion(context.Context) (int64, error) {
	return d.AuthVersion(), nil
}

// ChargedSince returns, per user id, what the user's requests at or after
// since were charged against their budgets: charged_tokens and
// charged_micro_usd where the limiter set them, else total_tokens and
// cost_micro_usd. Requests answered with an error status (aiproxy's own
// refusals, upstream errors) were charged nothing. Days folded into
// usage_daily by the retention count with their totals.
func (d *DB) ChargedSince(ctx context.Context, since time.Time) (map[int64]aiproxy.Charged, error) {
	return d.chargedSince(ctx, d.sql, since, nil)
}

// UserChargedSince is ChargedSince for one user.
func (d *DB) UserChargedSince(ctx context.Context, userID int64, since time.Time) (aiproxy.Charged, error) {
	m, err := d.chargedSince(ctx, d.sql, since, &userID)
	return m[userID], err
}

// chargedSince reads through q: the pool, or a transaction in progress.
func (d *DB) chargedSince(ctx context.Context, q queryer, since time.Time, userID *int64) (map[int64]aiproxy.Charged, error) {
	var where string
	args := []any{ms(since)}
	if userID != nil {
		where = " AND user_id = ?"
		args = append(args, *userID)
	}
	query := `SELECT user_id, COALESCE(SUM(COALESCE(charged_tokens, total_tokens, 0)), 0) AS t,
			COALESCE(SUM(COALESCE(charged_micro_usd, cost_micro_usd, 0)), 0) AS c
		FROM usage WHERE ts >= ? AND (status < 400 OR charged_tokens IS NOT NULL OR charged_micro_usd IS NOT NULL)` + where + ` GROUP BY user_id`
	daily, err := d.hasTable(ctx, q, "usage_daily")
	if err != nil {
		return nil, err
	}
	if daily {
		// A folded day is all-or-nothing: days start at 00:00 UTC, as
		// periods do. Its totals hold its error rows' tokens, and not the
		// charge of a request whose usage was unknown: close enough for
		// days older than the retention, which only a total budget reaches.
		query = `SELECT user_id, SUM(t), SUM(c) FROM (` + query + ` UNION ALL
			SELECT user_id, COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_micro_usd), 0)
			FROM usage_daily WHERE day >= ?` + where + ` GROUP BY user_id) AS s GROUP BY user_id`
		args = append(args, args...)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	out := map[int64]aiproxy.Charged{}
	for rows.Next() {
		var id int64
		var c aiproxy.Charged
		if err := rows.Scan(&id, &c.Tokens, &c.MicroUSD); err != nil {
			return nil, err
		}
		out[id] = c
	}
	return out, dbError(rows.Err())
}

// hasTable reports whether the schema has table name: usage_daily comes
// with a migration that may be missing from an older schema.
func (d *DB) hasTable(ctx context.Context, q queryer, name string) (bool, error) {
	query := "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?"
	if d.pg {
		query = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
	}
	rows, err := q.QueryContext(ctx, query, name)
	if err != nil {
		return false, dbError(err)
	}
	defer rows.Close()
	var n int
	if rows.Next() {
		err = rows.Scan(&n)
	}
	if err == nil {
		err = rows.Err()
	}
	return n > 0, dbError(err)
}

const limitsColumns = "rpm, tpm, concurrent, tokens, tokens_period, spend_micro_usd, spend_period, models"

// idScanner scans a row of the user id, then the columns scanLimits reads.
type idScanner struct {
	rows *sql.Rows
	id   *int64
}

func (s idScanner) Scan(dest ...any) error {
	return s.rows.Scan(append([]any{s.id}, dest...)...)
}

func scanLimits(s scanner) (*aiproxy.Limits, error) {
	var rpm, tpm, conc, tokens, spend sql.NullInt64
	var tokensPer, spendPer, models sql.NullString
	if err := s.Scan(&rpm, &tpm, &conc, &tokens, &tokensPer, &spend, &spendPer, &models); err != nil {
		return nil, err
	}
	l := &aiproxy.Limits{RPM: nullInt(rpm), TPM: nullInt(tpm), Concurrent: nullInt(conc)}
	if tokens.Valid {
		l.Tokens = &aiproxy.TokenBudget{Limit: tokens.Int64, Period: aiproxy.Period(tokensPer.String)}
	}
	if spend.Valid {
		l.Spend = &aiproxy.SpendBudget{LimitUSD: float64(spend.Int64) / 1e6, Period: aiproxy.Period(spendPer.String)}
	}
	if models.Valid {
		if err := json.Unmarshal([]byte(models.String), &l.Models); err != nil {
			return nil, err
		}
		if l.Models == nil {
			l.Models = []string{}
		}
	}
	return l, nil
}

func limitsArgs(l *aiproxy.Limits) ([]any, error) {
	var tokens, spend sql.NullInt64
	var tokensPer, spendPer, models sql.NullString
	if b := l.Tokens; b != nil {
		tokens = sql.NullInt64{Int64: b.Limit, Valid: true}
		tokensPer = sql.NullString{String: string(b.Period), Valid: true}
	}
	if b := l.Spend; b != nil {
		spend = sql.NullInt64{Int64: int64(math.Round(b.LimitUSD * 1e6)), Valid: true}
		spendPer = sql.NullString{String: string(b.Period), Valid: true}
	}
	if l.Models != nil {
		b, err := json.Marshal(l.Models)
		if err != nil {
			return nil, err
		}
		models = sql.NullString{String: string(b), Valid: true}
	}
	return []any{ptrInt(l.RPM), ptrInt(l.TPM), ptrInt(l.Concurrent), tokens, tokensPer, spend, spendPer, models}, nil
}

func nullInt(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	n := v.Int64
	return &n
}

func ptrInt(p *int64) sql.NullInt64 {
	if p == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: *p, Valid: true}
}
