package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// ProviderKey is one key to add to a provider.
type ProviderKey struct {
	Host string
	// BaseURL, when set, must match a known host's URL. A new host gets
	// BaseURL, or DefaultBaseURL when BaseURL is empty.
	BaseURL, DefaultBaseURL string
	// InjectUsage, when not nil, sets the host's flag (a new host: true).
	InjectUsage              *bool
	Secret, KeyHash, KeyHint string
}

// AddProviderKey stores one more key for a host, creating the host when it
// is new, in one transaction. A base URL different from a known host's, or
// the same key twice for one host, is ECONFLICT.
func (d *DB) AddProviderKey(ctx context.Context, k ProviderKey, now time.Time) error {
	host := k.Host
	return d.write(ctx, func(tx *sql.Tx) error {
		var id int64
		var current string
		err := tx.QueryRowContext(ctx, "SELECT id, base_url FROM providers WHERE host = ?", host).Scan(&id, &current)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			baseURL := k.BaseURL
			if baseURL == "" {
				baseURL = k.DefaultBaseURL
			}
			if baseURL == "" {
				return aiproxy.Errorf(aiproxy.EINVALID, "provider %s is new: it needs a base URL", host)
			}
			inject := true
			if k.InjectUsage != nil {
				inject = *k.InjectUsage
			}
			err = tx.QueryRowContext(ctx,
				"INSERT INTO providers (host, base_url, inject_usage, created_at) VALUES (?, ?, ?, ?) RETURNING id",
				host, baseURL, inject, ms(now)).Scan(&id)
			if err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if k.BaseURL != "" && k.BaseURL != current {
				return aiproxy.Errorf(aiproxy.ECONFLICT,
					"provider %s already has base URL %s: remove it first to change the URL", host, current)
			}
			if k.InjectUsage != nil {
				if _, err := tx.ExecContext(ctx, "UPDATE providers SET inject_usage = ? WHERE id = ?", *k.InjectUsage, id); err != nil {
					return err
				}
			}
		}
		_, err = tx.ExecContext(ctx,
			"INSERT INTO provider_keys (provider_id, secret, key_hash, key_hint, created_at) VALUES (?, ?, ?, ?, ?)",
			id, k.Secret, k.KeyHash, k.KeyHint, ms(now))
		if isUnique(err) {
			return aiproxy.Errorf(aiproxy.ECONFLICT, "provider %s already has this key", host)
		}
		return err
	})
}

// SetProviderInjectUsage sets whether aiproxy asks host for usage in streams.
// It returns ENOTFOUND for an unknown host.
func (d *DB) SetProviderInjectUsage(ctx context.Context, host string, inject bool) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		return expectOne(tx.ExecContext(ctx, "UPDATE providers SET inject_usage = ? WHERE host = ?", inject, host))(
			aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host))
	})
}

// RemoveProvider removes host and all its keys. It returns ENOTFOUND for an
// unknown host.
func (d *DB) RemoveProvider(ctx context.Context, host string) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		return expectOne(tx.ExecContext(ctx, "DELETE FROM providers WHERE host = ?", host))(
			aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host))
	})
}

// RemoveProviderKey removes the key of host whose hash is keyHash. Removing
// a host's last key removes the host. It returns ENOTFOUND when host or key
// is unknown.
func (d *DB) RemoveProviderKey(ctx context.Context, host, keyHash string) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, "SELECT id FROM providers WHERE host = ?", host).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host)
		}
		if err != nil {
			return err
		}
		err = expectOne(tx.ExecContext(ctx, "DELETE FROM provider_keys WHERE provider_id = ? AND key_hash = ?", id, keyHash))(
			aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s has no such key", host))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			"DELETE FROM providers WHERE id = ? AND NOT EXISTS (SELECT 1 FROM provider_keys WHERE provider_id = ?)", id, id)
		return err
	})
}

// ListProviders returns every provider by host, with key hints but no keys.
func (d *DB) ListProviders(ctx context.Context) ([]aiproxy.Provider, error) {
	return d.providers(ctx)
}

// ProviderByHost returns host with its secret keys, for the proxy.
// It returns ENOTFOUND for an unknown host.
func (d *DB) ProviderByHost(ctx context.Context, host string) (aiproxy.Provider, error) {
	p, err := d.cache.provider(ctx, host, func() (aiproxy.Provider, error) { return d.providerByHost(ctx, host) })
	return p, dbError(err)
}

func (d *DB) providerByHost(ctx context.Context, host string) (aiproxy.Provider, error) {
	rows, err := d.providerByHostStmt.QueryContext(ctx, host)
	if err != nil {
		return aiproxy.Provider{}, dbError(err)
	}
	ps, err := scanProviders(rows, true)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	if len(ps) == 0 {
		return aiproxy.Provider{}, aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host)
	}
	return ps[0], nil
}

// providerQuery selects providers with their key hints and secrets, one
// row per key (one with NULL key columns for a provider without keys).
// Callers add the WHERE and ORDER BY clauses.
const providerQuery = `SELECT p.id, p.host, p.base_url, p.inject_usage, k.key_hint, k.secret
		FROM providers p LEFT JOIN provider_keys k ON k.provider_id = p.id`

// providers lists every provider with its key hints, in one ordered join.
func (d *DB) providers(ctx context.Context) ([]aiproxy.Provider, error) {
	rows, err := d.sql.QueryContext(ctx, providerQuery+" ORDER BY p.host, k.id")
	if err != nil {
		return nil, dbError(err)
	}
	return scanProviders(rows, false)
}

// scanProviders reads and closes the rows of a providerQuery ordered by
// host, with the secrets when withSecrets is set.
func scanProviders(rows *sql.Rows, withSecrets bool) ([]aiproxy.Provider, error) {
	defer rows.Close()
	out := []aiproxy.Provider{}
	for rows.Next() {
		var p aiproxy.Provider
		var hint, secret sql.NullString
		if err := rows.Scan(&p.ID, &p.Host, &p.BaseURL, &p.InjectUsage, &hint, &secret); err != nil {
			return nil, err
		}
		if n := len(out); n == 0 || out[n-1].ID != p.ID {
			p.KeyHints = []string{}
			out = append(out, p)
		}
		last := &out[len(out)-1]
		if hint.Valid {
			last.KeyHints = append(last.KeyHints, hint.String)
			last.KeyCount++
			if withSecrets {
				last.Keys = append(last.Keys, secret.String)
			}
		}
	}
	return out, dbError(rows.Err())
}
