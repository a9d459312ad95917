package admin

import (
	"context"
	"strconv"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// ProviderSettings is one `provider set` (and its HTTP twin, POST
// /{token}/provider/{host}). A nil field is left as it is.
type ProviderSettings struct {
	BaseURL     *string // must parse as scheme://host[:port][/path]
	Alias       *string // "" removes the alias
	APIRoot     *string // "/v1", "/openai/v1"; "" or "/" is the base URL itself
	Auth        *string // bearer, x-api-key, api-key or x-goog-api-key
	InjectUsage *bool
	// Headers are pinned headers to set (name → value) or, with an empty
	// value, to remove; the others stay.
	Headers map[string]string
}

// SetProvider changes the settings of the provider whose host or alias is
// name, keeping its keys, in one transaction, and returns its row. Errors:
// EINVALID (name, a value, nothing to change), ENOTFOUND (name), ECONFLICT
// (the alias is another provider's alias or a registered host).
func (s *Service) SetProvider(ctx context.Context, name string, set ProviderSettings) (_ aiproxy.Provider, err error) {
	ctx, end := s.change(ctx, "provider.set", name)
	defer func() { end(err) }()
	h, err := aiproxy.NormalizeHost(name)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	if set.BaseURL == nil && set.Alias == nil && set.APIRoot == nil && set.Auth == nil &&
		set.InjectUsage == nil && len(set.Headers) == 0 {
		return aiproxy.Provider{}, aiproxy.Errorf(aiproxy.EINVALID,
			"nothing to change: give a base URL, alias, API root, auth scheme, inject-usage flag or header")
	}
	st, err := s.providerSettings(set)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	row, err := s.db.SetProvider(ctx, h, st)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	// The answer is the row exactly as `provider list` shows it.
	ps, err := s.ListProviders(ctx)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	for _, p := range ps {
		if p.Host == row.Host {
			return p, nil
		}
	}
	return row, nil
}

// ProviderSet returns one view of every provider with its secret keys, for
// the proxy: one auth_version read, then any number of Find calls (host,
// alias, a model's PREFIX/) without a query or an allocation.
func (s *Service) ProviderSet(ctx context.Context) (store.ProviderSet, error) {
	return s.db.ProviderSet(ctx)
}

// ProvidersWithKeys returns every provider that has keys, with its secret
// keys, for the merged model list (pkg/models) only.
func (s *Service) ProvidersWithKeys(ctx context.Context) ([]aiproxy.Provider, error) {
	return s.db.ProvidersWithKeys(ctx)
}

// providerSettings checks set's values and returns them in canonical form.
func (s *Service) providerSettings(set ProviderSettings) (store.ProviderSettings, error) {
	out := store.ProviderSettings{InjectUsage: set.InjectUsage}
	if set.BaseURL != nil {
		u, err := aiproxy.NormalizeBaseURL(*set.BaseURL)
		if err != nil {
			return out, err
		}
		out.BaseURL = &u
	}
	if set.Alias != nil {
		a := ""
		if *set.Alias != "" {
			var err error
			if a, err = aiproxy.NormalizeAlias(*set.Alias); err != nil {
				return out, err
			}
			if s.ReservedSegment != nil && (s.ReservedSegment(*set.Alias) || s.ReservedSegment(a)) {
				return out, aiproxy.Errorf(aiproxy.EINVALID, "alias %s is reserved: aiproxy's own routes start with it", strconv.Quote(*set.Alias))
			}
		}
		out.Alias = &a
	}
	if set.APIRoot != nil {
		r, err := aiproxy.NormalizeAPIRoot(*set.APIRoot)
		if err != nil {
			return out, err
		}
		out.APIRoot = &r
	}
	if set.Auth != nil {
		a, err := aiproxy.ParseAuth(*set.Auth)
		if err != nil {
			return out, err
		}
		out.Auth = &a
	}
	if len(set.Headers) > aiproxy.MaxPinnedHeaders {
		return out, aiproxy.Errorf(aiproxy.EINVALID, "at most %d pinned headers", aiproxy.MaxPinnedHeaders)
	}
	for name, v := range set.Headers {
		n, v, err := aiproxy.ValidateHeader(name, v)
		if err != nil {
			return out, err
		}
		if out.Headers == nil {
			out.Headers = map[string]string{}
		}
		out.Headers[n] = v
	}
	return out, nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// FindProvider returns the provider whose host or alias is name (any case),
// with its secret keys, for the proxy's model routing: a name that is no
// provider, or not even a host, is !ok, never an error. Errors: only the
// store's.
func (s *Service) FindProvider(ctx context.Context, name string) (aiproxy.Provider, bool, error) {
	if !plausibleName(name) {
		return aiproxy.Provider{}, false, nil
	}
	h, err := aiproxy.NormalizeHost(name)
	if err != nil {
		return aiproxy.Provider{}, false, nil
	}
	return s.db.FindProvider(ctx, h)
}

// plausibleName reports whether name may be a host or an alias, cheaply,
// so that NormalizeHost (whose refusal allocates an error) sees only those.
func plausibleName(name string) bool {
	if name == "" || len(name) > 253+6 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

// defaultAPIRoot is a new host's API root: the one its host is known to
// use, less what its base URL already holds (https://api.groq.com/openai,
// the older way to register Groq, has the API at /v1 under it).
func defaultAPIRoot(host, baseURL string) string {
	root := aiproxy.DefaultAPIRootFor(host)
	if rest, ok := strings.CutPrefix(root, "/openai/"); ok && strings.HasSuffix(baseURL, "/openai") {
		return "/" + rest
	}
	return root
}
