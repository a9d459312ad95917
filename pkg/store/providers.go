package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/seal"
)

// ProviderKey is one key to add to a provider.
type ProviderKey struct {
	Host string
	// BaseURL, when set, must match a known host's URL. A new host gets
	// BaseURL, or DefaultBaseURL when BaseURL is empty.
	BaseURL, DefaultBaseURL string
	// InjectUsage, when not nil, sets the host's flag (a new host: true).
	InjectUsage *bool
	// Alias, APIRoot and Auth, when set, set the host's (Alias checked as in
	// SetProvider); a new host without them gets no alias, DefaultAPIRoot
	// and DefaultAuth. All are in canonical form (pkg/aiproxy).
	Alias, APIRoot, Auth        string
	DefaultAPIRoot, DefaultAuth string
	Secret, KeyHash, KeyHint    string
}

// AddProviderKey stores one more key for a host, creating the host when it
// is new, in one transaction. A base URL different from a known host's, or
// the same key twice for one host, is ECONFLICT.
//
// The key is stored sealed (see Open), bound to host and its row; a secret
// that no longer opens the stored keys (a rekey since Open) is EINVALID.
func (d *DB) AddProviderKey(ctx context.Context, k ProviderKey, now time.Time) error {
	host := k.Host
	s := d.sealer.Load()
	return d.write(ctx, func(tx *sql.Tx) error {
		if err := checkSecret(ctx, tx, s.key); errors.Is(err, errWrongSecret) {
			return wrongSecret(s.name)
		} else if err != nil {
			return err
		}
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
			if err := checkNewHost(ctx, tx, host); err != nil {
				return err
			}
			root, auth := cmp.Or(k.APIRoot, k.DefaultAPIRoot, aiproxy.DefaultAPIRoot), cmp.Or(k.Auth, k.DefaultAuth, aiproxy.AuthBearer)
			err = tx.QueryRowContext(ctx,
				"INSERT INTO providers (host, base_url, inject_usage, api_root, auth, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
				host, baseURL, inject, root, auth, ms(now)).Scan(&id)
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
			if err := setRootAndAuth(ctx, tx, id, k.APIRoot, k.Auth); err != nil {
				return err
			}
		}
		if k.Alias != "" {
			if err := setAlias(ctx, tx, id, host, k.Alias); err != nil {
				return err
			}
		}
		// The row id is part of the sealed key's associated data, so it is
		// chosen before the insert (no other writer runs: immediate tx).
		var keyID int64
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) + 1 FROM provider_keys").Scan(&keyID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			"INSERT INTO provider_keys (id, provider_id, secret, key_hash, key_hint, created_at) VALUES (?, ?, ?, ?, ?, ?)",
			keyID, id, s.key.Seal([]byte(k.Secret), keyAD(host, keyID)), k.KeyHash, k.KeyHint, ms(now))
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

// ProviderByHost returns the provider whose host or alias is name (an
// alias in any case), with its secret keys, for the proxy: the canonical
// provider, whichever name found it. name is a normalised host[:port] (see
// aiproxy.NormalizeHost) or an alias. It answers from the cache, which holds
// the whole provider table, so an unknown name costs no query and no
// memory. It returns ENOTFOUND for an unknown name.
func (d *DB) ProviderByHost(ctx context.Context, name string) (aiproxy.Provider, error) {
	p, ok, err := d.FindProvider(ctx, name)
	if err == nil && !ok {
		err = aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", name)
	}
	return p, err
}

// FindProvider is ProviderByHost that reports a miss as !ok instead of an
// error, so that model routing, which looks up every PREFIX/ of a model
// name, allocates nothing for a name that is no provider.
func (d *DB) FindProvider(ctx context.Context, name string) (aiproxy.Provider, bool, error) {
	t, err := d.cache.providerTable(ctx, func() (*providerTable, error) { return d.loadProviderTable(ctx) })
	if err != nil {
		return aiproxy.Provider{}, false, dbError(err)
	}
	p, ok, err := t.find(name)
	return p, ok, err
}

func (d *DB) providerByHost(ctx context.Context, host string) (aiproxy.Provider, error) {
	rows, err := d.providerByHostStmt.QueryContext(ctx, host)
	if err != nil {
		return aiproxy.Provider{}, dbError(err)
	}
	ps, err := scanProviders(rows, d.sealer.Load().key)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	if len(ps) == 0 {
		return aiproxy.Provider{}, aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host)
	}
	return ps[0], nil
}

// providerQuery selects providers with their key hints and sealed keys,
// one row per key (one with NULL key columns for a provider without keys).
// Callers add the WHERE and ORDER BY clauses.
const providerQuery = `SELECT p.id, p.host, p.base_url, p.inject_usage, p.alias, p.api_root, p.auth, p.headers, p.version,
		k.id, k.key_hint, k.secret, k.state, k.rest_until
		FROM providers p LEFT JOIN provider_keys k ON k.provider_id = p.id`

// providers lists every provider with its key hints, in one ordered join.
func (d *DB) providers(ctx context.Context) ([]aiproxy.Provider, error) {
	rows, err := d.sql.QueryContext(ctx, providerQuery+" ORDER BY p.host, k.id")
	if err != nil {
		return nil, dbError(err)
	}
	return scanProviders(rows, nil)
}

// scanProviders reads and closes the rows of a providerQuery ordered by
// host. With a key it unseals the provider keys, as the cache loads them;
// without one (listings) they are not read at all.
func scanProviders(rows *sql.Rows, key *seal.Key) ([]aiproxy.Provider, error) {
	out, broken, err := scanProviderRows(rows, key)
	if err == nil {
		for _, e := range broken {
			return nil, e
		}
	}
	return out, err
}

// scanProviderRows is scanProviders that goes on past a key that does not
// unseal: broken maps the index in the result of each such provider to its
// error, so that one damaged row does not take the other providers down.
func scanProviderRows(rows *sql.Rows, key *seal.Key) (out []aiproxy.Provider, broken map[int]error, err error) {
	defer rows.Close()
	out = []aiproxy.Provider{}
	for rows.Next() {
		var p aiproxy.Provider
		var keyID, restUntil sql.NullInt64
		var alias, hint, state sql.NullString
		var headers string
		var sealed []byte
		if err := rows.Scan(&p.ID, &p.Host, &p.BaseURL, &p.InjectUsage, &alias, &p.APIRoot, &p.Auth, &headers, &p.Version,
			&keyID, &hint, &sealed, &state, &restUntil); err != nil {
			return nil, nil, err
		}
		if n := len(out); n == 0 || out[n-1].ID != p.ID {
			p.KeyHints = []string{}
			p.KeyStates = []aiproxy.KeyState{}
			p.Alias = alias.String
			var err error
			if p.Headers, err = decodeHeaders(headers); err != nil {
				return nil, nil, fmt.Errorf("headers of provider %s: %w", p.Host, err)
			}
			out = append(out, p)
		}
		last := &out[len(out)-1]
		if hint.Valid {
			last.KeyHints = append(last.KeyHints, hint.String)
			last.KeyStates = append(last.KeyStates, keyState(keyID.Int64, hint.String, state.String, restUntil))
			last.KeyCount++
			if key != nil {
				plain, err := key.Open(sealed, keyAD(last.Host, keyID.Int64))
				if err != nil {
					if broken == nil {
						broken = map[int]error{}
					}
					if _, seen := broken[len(out)-1]; !seen {
						// Never the key itself: this error is logged.
						broken[len(out)-1] = fmt.Errorf("unseal key %d of provider %s: %w", keyID.Int64, last.Host, err)
					}
					continue
				}
				last.Keys = append(last.Keys, string(plain))
			}
		}
	}
	return out, broken, dbError(rows.Err())
}

// keyState is one key's state as listings and the proxy see it: a rest
// that has ended reads ok.
func keyState(id int64, hint, state string, until sql.NullInt64) aiproxy.KeyState {
	ks := aiproxy.KeyState{ID: id, Hint: hint, State: aiproxy.KeyOK}
	switch {
	case state == aiproxy.KeyRejected:
		ks.State = aiproxy.KeyRejected
	case state == aiproxy.KeyResting && until.Valid && time.Now().Before(fromMS(until.Int64)):
		t := fromMS(until.Int64)
		ks.State, ks.Until = aiproxy.KeyResting, &t
	}
	return ks
}

// RestKey records that the upstream refused the provider key with id: it
// rests until until, or, with a zero until, is rejected until an admin
// touches its provider (migration 0008). Not a touch itself. version is the
// provider's version when the key was refused: a touch since then wins,
// and the state is not written again.
func (d *DB) RestKey(ctx context.Context, id, version int64, until time.Time) error {
	state, at := aiproxy.KeyRejected, sql.NullInt64{}
	if !until.IsZero() {
		state, at = aiproxy.KeyResting, sql.NullInt64{Int64: ms(until), Valid: true}
	}
	return d.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE provider_keys SET state = ?, rest_until = ?
			WHERE id = ? AND (SELECT version FROM providers WHERE id = provider_keys.provider_id) = ?
			AND NOT (state = ? AND rest_until IS NOT DISTINCT FROM ?)`, state, at, id, version, state, at)
		return err
	})
}
