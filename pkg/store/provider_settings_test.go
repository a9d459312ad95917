package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

func settingsAddKey(t *testing.T, d *DB, host, secret string, k ProviderKey) {
	t.Helper()
	k.Host, k.Secret, k.KeyHash, k.KeyHint = host, secret, keys.Hash(secret), keys.Hint(secret)
	if k.DefaultBaseURL == "" {
		k.DefaultBaseURL = "https://" + host
	}
	if err := d.AddProviderKey(t.Context(), k, time.Now()); err != nil {
		t.Fatalf("AddProviderKey(%s) error = %v", host, err)
	}
}

func wantErrCode(t *testing.T, op string, err error, code string) {
	t.Helper()
	if got := aiproxy.ErrorCode(err); got != code {
		t.Errorf("%s error = %v (code %q), want %q", op, err, got, code)
	}
}

func ptr[T any](v T) *T { return &v }

// TestProviderByHost_FindsAnAliasInAnyCase: a provider is found by its
// alias, whatever its case, as the canonical provider with its keys; a
// host is still matched exactly.
func TestProviderByHost_FindsAnAliasInAnyCase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, _ := openPair(t)
	settingsAddKey(t, d, "api.groq.com", "gsk_1", ProviderKey{Alias: "groq", DefaultAPIRoot: "/openai/v1"})
	for _, name := range []string{"api.groq.com", "groq", "GROQ", "Groq"} {
		p, err := d.ProviderByHost(ctx, name)
		if err != nil {
			t.Fatalf("ProviderByHost(%q) error = %v", name, err)
		}
		if p.Host != "api.groq.com" || p.Alias != "groq" || p.APIRoot != "/openai/v1" || len(p.Keys) != 1 {
			t.Errorf("ProviderByHost(%q) = %s alias %q root %q, %d keys; want api.groq.com, groq, /openai/v1, 1 key",
				name, p.Host, p.Alias, p.APIRoot, len(p.Keys))
		}
	}
	wantErrCode(t, "ProviderByHost(API.GROQ.COM)", errOf(d.ProviderByHost(ctx, "API.GROQ.COM")), aiproxy.ENOTFOUND)
	wantErrCode(t, "ProviderByHost(grok)", errOf(d.ProviderByHost(ctx, "grok")), aiproxy.ENOTFOUND)
}

func errOf[T any](_ T, err error) error { return err }

// TestSetProvider_AliasCollisions: an alias that is another provider's
// alias or a registered host (in any case), or the provider's own host, is
// refused; so is a new host that is an alias. Nothing changes.
func TestSetProvider_AliasCollisions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, _ := openPair(t)
	settingsAddKey(t, d, "api.groq.com", "gsk_1", ProviderKey{Alias: "groq"})
	settingsAddKey(t, d, "api.openai.com", "sk-1", ProviderKey{})
	settingsAddKey(t, d, "ollama", "o-1", ProviderKey{DefaultBaseURL: "http://127.0.0.1:11434"})
	tests := []struct {
		name, host, alias, code string
	}{
		{"another provider's alias", "api.openai.com", "groq", aiproxy.ECONFLICT},
		{"another provider's host", "api.openai.com", "ollama", aiproxy.ECONFLICT},
		{"another provider's host in upper case", "api.openai.com", "OLLAMA", aiproxy.ECONFLICT},
		{"its own host", "ollama", "ollama", aiproxy.EINVALID},
		{"unknown provider", "api.mistral.ai", "mistral", aiproxy.ENOTFOUND},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.SetProvider(ctx, tc.host, ProviderSettings{Alias: ptr(tc.alias)})
			wantErrCode(t, fmt.Sprintf("SetProvider(%s, alias %s)", tc.host, tc.alias), err, tc.code)
		})
	}
	err := d.AddProviderKey(ctx, ProviderKey{Host: "groq", DefaultBaseURL: "https://groq", Secret: "k", KeyHash: keys.Hash("k"), KeyHint: "k"}, time.Now())
	wantErrCode(t, "AddProviderKey(new host that is an alias)", err, aiproxy.ECONFLICT)
	p, err := d.ProviderByHost(ctx, "api.openai.com")
	if err != nil || p.Alias != "" {
		t.Errorf("api.openai.com after refused changes: alias %q, %v; want none", p.Alias, err)
	}
}

// TestSetProvider_AllSettings: every setting changes in one call, by host
// or alias, and the answer is the listing row (no keys); headers merge,
// an empty value removes one; an alias can be removed.
func TestSetProvider_AllSettings(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, _ := openPair(t)
	settingsAddKey(t, d, "api.example.com", "sk-1", ProviderKey{})
	got, err := d.SetProvider(ctx, "api.example.com", ProviderSettings{
		BaseURL: ptr("https://gw.example.com/openai"), Alias: ptr("ex"), APIRoot: ptr("/v2"), Auth: ptr(aiproxy.AuthAPIKey),
		InjectUsage: ptr(false), Headers: map[string]string{"Openai-Project": "proj_1", "X-Team": "a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := aiproxy.Provider{Host: "api.example.com", BaseURL: "https://gw.example.com/openai", KeyCount: 1,
		KeyHints: []string{keys.Hint("sk-1")}, Alias: "ex", APIRoot: "/v2", Auth: aiproxy.AuthAPIKey,
		Headers: map[string]string{"Openai-Project": "proj_1", "X-Team": "a"}}
	ignore := cmp.FilterPath(func(p cmp.Path) bool {
		s := p.Last().String()
		return s == ".ID" || s == ".KeyStates" || s == ".Version"
	}, cmp.Ignore())
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("SetProvider() row mismatch (-want +got):\n%s", diff)
	}
	// By alias: remove one header, keep the other; remove the alias.
	got, err = d.SetProvider(ctx, "ex", ProviderSettings{Headers: map[string]string{"X-Team": ""}, Alias: ptr("")})
	if err != nil {
		t.Fatal(err)
	}
	want.Headers, want.Alias = map[string]string{"Openai-Project": "proj_1"}, ""
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("SetProvider(by alias) row mismatch (-want +got):\n%s", diff)
	}
	p, err := d.ProviderByHost(ctx, "api.example.com")
	if err != nil || len(p.Keys) != 1 || p.Keys[0] != "sk-1" || p.BaseURL != "https://gw.example.com/openai" {
		t.Errorf("ProviderByHost after set = %s, %d keys, %v; want the new URL with its key", p.BaseURL, len(p.Keys), err)
	}
	wantErrCode(t, "ProviderByHost(ex) after the alias is removed", errOf(d.ProviderByHost(ctx, "ex")), aiproxy.ENOTFOUND)
}

// TestSetProvider_SeenByRunningServe: a change made through another handle
// (the CLI) is seen by serve's handle at its next lookup: the settings'
// columns bump auth_version like every provider change.
func TestSetProvider_SeenByRunningServe(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serve, cli := openPair(t)
	settingsAddKey(t, cli, "api.groq.com", "gsk_1", ProviderKey{})
	if _, err := serve.ProviderByHost(ctx, "groq"); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Fatalf("ProviderByHost(groq) before the alias error = %v, want ENOTFOUND", err)
	}
	if _, err := cli.SetProvider(ctx, "api.groq.com", ProviderSettings{Alias: ptr("groq"), Auth: ptr(aiproxy.AuthXAPIKey)}); err != nil {
		t.Fatal(err)
	}
	p, err := serve.ProviderByHost(ctx, "groq")
	if err != nil || p.Host != "api.groq.com" || p.Auth != aiproxy.AuthXAPIKey {
		t.Errorf("ProviderByHost(groq) after the CLI set it = %s auth %s, %v; want api.groq.com, x-api-key", p.Host, p.Auth, err)
	}
	ps, err := serve.ProvidersWithKeys(ctx)
	if err != nil || len(ps) != 1 || len(ps[0].Keys) != 1 {
		t.Errorf("ProvidersWithKeys() = %d providers, %v; want 1 with its key", len(ps), err)
	}
}

// TestProviderByHost_UnknownNamesDoNotGrowTheCache: lookups of many names
// that are no provider are answered from the one cached table: no query
// each, and the cache holds one entry whatever their number.
func TestProviderByHost_UnknownNamesDoNotGrowTheCache(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, _ := openPair(t)
	settingsAddKey(t, d, "api.example.com", "sk-1", ProviderKey{})
	for i := range 2000 {
		name := fmt.Sprintf("garbage-%d.example", i)
		if _, err := d.ProviderByHost(ctx, name); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
			t.Fatalf("ProviderByHost(%s) error = %v, want ENOTFOUND", name, err)
		}
	}
	d.cache.mu.Lock()
	n := len(d.cache.providers)
	d.cache.mu.Unlock()
	if n != 1 {
		t.Errorf("cache holds %d provider entries after 2000 unknown names, want 1 (the table)", n)
	}
}
