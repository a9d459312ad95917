package store

import (
	"context"
	"database/sql"
	"math"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// SetPrice stores p as the price of p.Model, replacing a price set before.
// It bumps auth_version (migration 0004's triggers), so serve sees it at
// its next request. The caller validates p (admin.Service.SetPrice).
func (d *DB) SetPrice(ctx context.Context, p aiproxy.Price, now time.Time) error {
	var cached sql.NullFloat64
	if p.CachedInput != nil {
		cached = sql.NullFloat64{Float64: *p.CachedInput, Valid: true}
	}
	return d.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO prices (model, input, output, cached_input, updated_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (model) DO UPDATE SET input = excluded.input, output = excluded.output,
				cached_input = excluded.cached_input, updated_at = excluded.updated_at`,
			p.Model, p.Input, p.Output, cached, ms(now))
		return err
	})
}

// DeletePrice removes the stored price of model. When none is stored it
// returns missing, or ENOTFOUND when missing is nil: the caller knows
// whether a built-in price makes that a conflict, and the audit log
// records the refusal the caller reports.
func (d *DB) DeletePrice(ctx context.Context, model string, missing error) error {
	if missing == nil {
		missing = aiproxy.Errorf(aiproxy.ENOTFOUND, "no price is set for model %q", model)
	}
	return d.write(ctx, func(tx *sql.Tx) error {
		return expectOne(tx.ExecContext(ctx, "DELETE FROM prices WHERE model = ?", model))(missing)
	})
}

// ListPrices returns the stored prices (not the built-in ones), by model.
func (d *DB) ListPrices(ctx context.Context) ([]aiproxy.Price, error) {
	_, ps, err := d.listPrices(ctx, false)
	return ps, err
}

// PricesVersion returns the stored prices with the auth_version they are
// at least as new as: the counter is read before the prices, so a change
// committed between the two reads makes the prices newer than the version,
// never older, and a cache keyed by that version reloads once too often
// rather than never.
func (d *DB) PricesVersion(ctx context.Context) (int64, []aiproxy.Price, error) {
	return d.listPrices(ctx, true)
}

func (d *DB) listPrices(ctx context.Context, withVersion bool) (int64, []aiproxy.Price, error) {
	var version int64
	if withVersion {
		if err := d.sql.QueryRowContext(ctx, "SELECT v FROM auth_version WHERE id = 1").Scan(&version); err != nil {
			return 0, nil, dbError(err)
		}
	}
	rows, err := d.sql.QueryContext(ctx, "SELECT model, input, output, cached_input FROM prices ORDER BY model")
	if err != nil {
		return 0, nil, dbError(err)
	}
	defer rows.Close()
	out := []aiproxy.Price{}
	for rows.Next() {
		var p aiproxy.Price
		var cached sql.NullFloat64
		if err := rows.Scan(&p.Model, &p.Input, &p.Output, &cached); err != nil {
			return 0, nil, err
		}
		if cached.Valid {
			v := cached.Float64
			p.CachedInput = &v
		}
		out = append(out, p)
	}
	return version, out, dbError(rows.Err())
}

// AuthVersion is the auth_version counter as the last user or provider
// lookup (UserByKeyHash, ProviderByHost) read it: no query, a mutex and a
// load. The proxy looks its user up first on every request, so after that
// it is the value as of this request; a price change moves it too.
func (d *DB) AuthVersion() int64 {
	d.cache.mu.Lock()
	defer d.cache.mu.Unlock()
	return d.cache.version
}

// MicroUSD converts a dollar amount to the whole micro-dollars the usage
// table stores, rounded to the nearest (half away from zero).
func MicroUSD(usd float64) int64 {
	return int64(math.Round(usd * 1e6))
}

// costMicroUSD is the cost_micro_usd column's value for a usage record's
// CostUSD: NULL for an unpriced request.
func costMicroUSD(usd *float64) sql.NullInt64 {
	if usd == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: MicroUSD(*usd), Valid: true}
}

// fromMicroUSD is costMicroUSD's inverse, for sums read back.
func fromMicroUSD(v sql.NullInt64) *float64 {
	if !v.Valid {
		return nil
	}
	usd := float64(v.Int64) / 1e6
	return &usd
}
