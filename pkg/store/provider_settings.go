package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// ProviderSettings is one change of a provider's settings (`provider set`).
// A nil field is left as it is. Values are in canonical form (pkg/aiproxy
// checks them); the store checks what needs the other rows: an alias that
// is another provider's alias or a registered host.
type ProviderSettings struct {
	BaseURL     *string
	Alias       *string // "" removes the alias
	APIRoot     *string
	Auth        *string
	InjectUsage *bool
	// Headers are merged into the pinned headers: a name with an empty
	// value is removed, any other is set.
	Headers map[string]string
}

// SetProvider changes the settings of the provider whose host or alias is
// name, in one transaction, and returns its row (key hints, no keys). Its
// keys stay; a new base URL is where they go from then on. Errors:
// ENOTFOUND (name), ECONFLICT (alias taken by another provider or a host),
// EINVALID (too many pinned headers).
func (d *DB) SetProvider(ctx context.Context, name string, s ProviderSettings) (aiproxy.Provider, error) {
	var host string
	err := d.write(ctx, func(tx *sql.Tx) error {
		var id int64
		var headers string
		err := tx.QueryRowContext(ctx,
			"SELECT id, host, headers FROM providers WHERE host = ? OR alias = ? COLLATE NOCASE ORDER BY host = ? DESC LIMIT 1",
			name, name, name).Scan(&id, &host, &headers)
		if errors.Is(err, sql.ErrNoRows) {
			return aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", name)
		}
		if err != nil {
			return err
		}
		if s.BaseURL != nil {
			if _, err := tx.ExecContext(ctx, "UPDATE providers SET base_url = ? WHERE id = ?", *s.BaseURL, id); err != nil {
				return err
			}
		}
		if s.InjectUsage != nil {
			if _, err := tx.ExecContext(ctx, "UPDATE providers SET inject_usage = ? WHERE id = ?", *s.InjectUsage, id); err != nil {
				return err
			}
		}
		if err := setRootAndAuth(ctx, tx, id, deref(s.APIRoot), deref(s.Auth)); err != nil {
			return err
		}
		if s.Alias != nil {
			if err := setAlias(ctx, tx, id, host, *s.Alias); err != nil {
				return err
			}
		}
		if len(s.Headers) > 0 {
			h, err := decodeHeaders(headers)
			if err != nil {
				return err
			}
			for k, v := range s.Headers {
				if v == "" {
					delete(h, k)
				} else {
					h[k] = v
				}
			}
			if len(h) > aiproxy.MaxPinnedHeaders {
				return aiproxy.Errorf(aiproxy.EINVALID, "provider %s would pin %d headers: at most %d", host, len(h), aiproxy.MaxPinnedHeaders)
			}
			b, err := json.Marshal(h)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE providers SET headers = ? WHERE id = ?", string(b), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return aiproxy.Provider{}, err
	}
	return d.providerRow(ctx, host)
}

// SetProviderBaseURL moves host, with its keys, to baseURL (canonical, see
// aiproxy.NormalizeBaseURL). Errors: ENOTFOUND.
func (d *DB) SetProviderBaseURL(ctx context.Context, host, baseURL string) error {
	_, err := d.SetProvider(ctx, host, ProviderSettings{BaseURL: &baseURL})
	return err
}

// ProvidersWithKeys returns every provider that has at least one key, with
// its secret keys, by host: what the merged model list asks. It answers
// from the same cache as ProviderByHost, so it costs no query while the
// providers are unchanged. The slices and maps inside are shared: read-only.
func (d *DB) ProvidersWithKeys(ctx context.Context) ([]aiproxy.Provider, error) {
	t, err := d.cache.providerTable(ctx, func() (*providerTable, error) { return d.loadProviderTable(ctx) })
	if err != nil {
		return nil, dbError(err)
	}
	out := make([]aiproxy.Provider, 0, len(t.list))
	for i, p := range t.list {
		if len(p.Keys) > 0 && t.broken[i] == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// providerRow is the listing row (no keys) of host.
func (d *DB) providerRow(ctx context.Context, host string) (aiproxy.Provider, error) {
	rows, err := d.sql.QueryContext(ctx, providerQuery+" WHERE p.host = ? ORDER BY k.id", host)
	if err != nil {
		return aiproxy.Provider{}, dbError(err)
	}
	ps, err := scanProviders(rows, nil)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	if len(ps) == 0 {
		// Removed by another process since the change: say so.
		return aiproxy.Provider{}, aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host)
	}
	return ps[0], nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// setRootAndAuth sets provider id's API root and auth scheme, each only
// when not empty.
func setRootAndAuth(ctx context.Context, tx *sql.Tx, id int64, root, auth string) error {
	if root != "" {
		if _, err := tx.ExecContext(ctx, "UPDATE providers SET api_root = ? WHERE id = ?", root, id); err != nil {
			return err
		}
	}
	if auth != "" {
		if _, err := tx.ExecContext(ctx, "UPDATE providers SET auth = ? WHERE id = ?", auth, id); err != nil {
			return err
		}
	}
	return nil
}

// setAlias gives provider id (host) the alias (lower case; "" removes it)
// unless it names another provider: its alias or its host. Errors:
// ECONFLICT.
func setAlias(ctx context.Context, tx *sql.Tx, id int64, host, alias string) error {
	if alias == "" {
		_, err := tx.ExecContext(ctx, "UPDATE providers SET alias = NULL WHERE id = ?", id)
		return err
	}
	var other string
	var isHost bool
	err := tx.QueryRowContext(ctx,
		`SELECT host, host = ? COLLATE NOCASE FROM providers
		  WHERE id != ? AND (host = ? COLLATE NOCASE OR alias = ? COLLATE NOCASE) LIMIT 1`,
		alias, id, alias, alias).Scan(&other, &isHost)
	switch {
	case err == nil && isHost:
		return aiproxy.Errorf(aiproxy.ECONFLICT, "alias %s is the host of a registered provider: choose another", alias)
	case err == nil:
		return aiproxy.Errorf(aiproxy.ECONFLICT, "alias %s is already the alias of provider %s", alias, other)
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	if strings.EqualFold(alias, host) {
		return aiproxy.Errorf(aiproxy.EINVALID, "alias %s is the provider's own host: an alias is another name", alias)
	}
	_, err = tx.ExecContext(ctx, "UPDATE providers SET alias = ? WHERE id = ?", alias, id)
	if isUnique(err) {
		return aiproxy.Errorf(aiproxy.ECONFLICT, "alias %s is already the alias of another provider", alias)
	}
	return err
}

// checkNewHost refuses a new host that is already a provider's alias: the
// two names would route to different providers.
func checkNewHost(ctx context.Context, tx *sql.Tx, host string) error {
	var other string
	err := tx.QueryRowContext(ctx, "SELECT host FROM providers WHERE alias = ? COLLATE NOCASE", host).Scan(&other)
	switch {
	case err == nil:
		return aiproxy.Errorf(aiproxy.ECONFLICT, "%s is the alias of provider %s: it cannot also be a host", host, other)
	case errors.Is(err, sql.ErrNoRows):
		return nil
	}
	return err
}

// decodeHeaders reads the headers column; never nil.
func decodeHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	if s == "" || s == "{}" {
		return h, nil
	}
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return nil, err
	}
	return h, nil
}

// providerTable is the whole provider table with the secret keys, as the
// cache keeps it: a lookup by host or alias of a name that is neither is
// answered from it, without a query, and without growing any map.
type providerTable struct {
	list    []aiproxy.Provider // by host
	byHost  map[string]int     // host → index in list
	byAlias map[string]int     // alias (lower case) → index in list
	// broken holds, by index in list, the error of each provider with a key
	// that does not unseal (a damaged or moved row): looking it up fails,
	// the other providers still work.
	broken map[int]error
}

// find returns the provider named name: its host, exactly (hosts are
// normalised before they reach the store), or its alias, in any case; or,
// for a provider whose keys do not unseal, that error.
func (t *providerTable) find(name string) (aiproxy.Provider, bool, error) {
	i, ok := t.byHost[name]
	if !ok {
		if i, ok = t.byAlias[name]; !ok {
			if lower := strings.ToLower(name); lower != name {
				i, ok = t.byAlias[lower]
			}
		}
	}
	if !ok {
		return aiproxy.Provider{}, false, nil
	}
	if err := t.broken[i]; err != nil {
		return aiproxy.Provider{}, true, err
	}
	return t.list[i], true, nil
}

// loadProviderTable reads every provider with its unsealed keys.
func (d *DB) loadProviderTable(ctx context.Context) (*providerTable, error) {
	rows, err := d.sql.QueryContext(ctx, providerQuery+" ORDER BY p.host, k.id")
	if err != nil {
		return nil, dbError(err)
	}
	list, broken, err := scanProviderRows(rows, d.sealer.Load().key)
	if err != nil {
		return nil, err
	}
	t := &providerTable{list: list, byHost: make(map[string]int, len(list)), byAlias: map[string]int{}, broken: broken}
	for i, p := range list {
		t.byHost[p.Host] = i
		if p.Alias != "" {
			t.byAlias[strings.ToLower(p.Alias)] = i
		}
	}
	return t, nil
}

// ProviderSet is one consistent view of every provider, with the secret
// keys, as the cache holds it: a request that looks up several names (an
// X-Host-Final, a model's PREFIX/, the default provider) reads the
// auth_version once, with ProviderSet, and then finds them all without a
// query or an allocation. Read-only.
type ProviderSet struct{ t *providerTable }

// ProviderSet returns the current provider set (see ProviderByHost).
func (d *DB) ProviderSet(ctx context.Context) (ProviderSet, error) {
	t, err := d.cache.providerTable(ctx, func() (*providerTable, error) { return d.loadProviderTable(ctx) })
	if err != nil {
		return ProviderSet{}, dbError(err)
	}
	return ProviderSet{t}, nil
}

// Find returns the provider named name: a host (normalised on a miss, so
// "API.Groq.com." finds api.groq.com) or an alias in any case. A name that
// is no provider is !ok, not an error; a provider whose keys do not unseal
// is ok with that error.
func (s ProviderSet) Find(name string) (aiproxy.Provider, bool, error) {
	if s.t == nil {
		return aiproxy.Provider{}, false, nil
	}
	if p, ok, err := s.t.find(name); ok {
		return p, ok, err
	}
	if h, err := aiproxy.NormalizeHost(name); err == nil && h != name {
		return s.t.find(h)
	}
	return aiproxy.Provider{}, false, nil
}
