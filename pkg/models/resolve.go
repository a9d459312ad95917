package models

import (
	"context"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// Find looks a provider up by host or alias (any case), reporting whether
// there is one: admin.Service.FindProvider. A miss is not an error.
type Find func(ctx context.Context, name string) (aiproxy.Provider, bool, error)

// ResolveModel routes a request's model (CONTRACT section 6): when model is
// PREFIX/MODEL and PREFIX names a registered provider (its alias or host,
// any case), it returns that provider and MODEL, with ok. Otherwise ok is
// false and the name goes unchanged to the default provider: a model name
// may hold a "/" of its own (meta-llama/Llama-3.3-70B). err is set only
// when the lookup itself failed (the database). bare is a substring of
// model: routing allocates nothing of its own.
func ResolveModel(ctx context.Context, model string, find Find) (p aiproxy.Provider, bare string, ok bool, err error) {
	prefix, rest, found := strings.Cut(model, "/")
	if !found || prefix == "" || rest == "" {
		return aiproxy.Provider{}, "", false, nil
	}
	p, ok, err = find(ctx, prefix)
	if err != nil || !ok {
		return aiproxy.Provider{}, "", false, err
	}
	return p, rest, true, nil
}
