package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/models"
)

func sptr(s string) *string { return &s }

// TestAddProviderKey_WellKnownHostDefaults: a new host gets the API root
// and auth scheme it is known to use; flags override them.
func TestAddProviderKey_WellKnownHostDefaults(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := t.Context()
	tests := []struct {
		host, alias, root, auth string // root, auth: flags ("" = default)
		wantRoot, wantAuth      string
	}{
		{"api.openai.com", "", "", "", "/v1", "bearer"},
		{"api.groq.com", "groq", "", "", "/openai/v1", "bearer"},
		{"api.anthropic.com", "claude", "", "", "/v1", "x-api-key"},
		{"myres.openai.azure.com", "", "", "", "/v1", "api-key"},
		{"generativelanguage.googleapis.com", "gemini", "/v1beta/openai/", "", "/v1beta/openai", "x-goog-api-key"},
		{"localhost:11434", "Ollama", "v1", "BEARER", "/v1", "bearer"},
	}
	for _, tc := range tests {
		err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: tc.host, Key: "k-" + tc.host, Alias: tc.alias, APIRoot: tc.root, Auth: tc.auth})
		if err != nil {
			t.Fatalf("AddProviderKey(%s) error = %v", tc.host, err)
		}
		p, err := f.svc.Provider(ctx, tc.host)
		if err != nil {
			t.Fatal(err)
		}
		if p.APIRoot != tc.wantRoot || p.Auth != tc.wantAuth || p.Alias != strings.ToLower(tc.alias) {
			t.Errorf("AddProviderKey(%s): root %q auth %q alias %q; want %q %q %q", tc.host, p.APIRoot, p.Auth, p.Alias, tc.wantRoot, tc.wantAuth, strings.ToLower(tc.alias))
		}
	}
	// The alias works wherever the host does: Provider normalises it too.
	if p, err := f.svc.Provider(ctx, "OLLAMA"); err != nil || p.Host != "localhost:11434" {
		t.Errorf("Provider(OLLAMA) = %s, %v; want localhost:11434", p.Host, err)
	}
}

// TestSetProvider_RefusesBadInput: each bad value is refused with one
// clear line, and nothing changes.
func TestSetProvider_RefusesBadInput(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := t.Context()
	for _, h := range []string{"api.openai.com", "api.groq.com"} {
		if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: h, Key: "k-" + h}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.svc.SetProvider(ctx, "api.groq.com", admin.ProviderSettings{Alias: sptr("groq")}); err != nil {
		t.Fatal(err)
	}
	f.svc.ReservedSegment = func(seg string) bool { return seg == "s3cret-token" }
	tests := []struct {
		name string
		set  admin.ProviderSettings
		code string
		msg  string // a part of the message
	}{
		{"nothing", admin.ProviderSettings{}, aiproxy.EINVALID, "nothing to change"},
		{"alias of another provider", admin.ProviderSettings{Alias: sptr("Groq")}, aiproxy.ECONFLICT, "already the alias of provider api.groq.com"},
		{"alias that is a host", admin.ProviderSettings{Alias: sptr("api.groq.com")}, aiproxy.ECONFLICT, "host of a registered provider"},
		{"reserved v1", admin.ProviderSettings{Alias: sptr("v1")}, aiproxy.EINVALID, "reserved"},
		{"reserved V2", admin.ProviderSettings{Alias: sptr("V2")}, aiproxy.EINVALID, "reserved"},
		{"reserved openai", admin.ProviderSettings{Alias: sptr("openai")}, aiproxy.EINVALID, "reserved"},
		{"reserved me", admin.ProviderSettings{Alias: sptr("me")}, aiproxy.EINVALID, "reserved"},
		{"reserved dashboard", admin.ProviderSettings{Alias: sptr("dashboard")}, aiproxy.EINVALID, "reserved"},
		{"the admin token", admin.ProviderSettings{Alias: sptr("s3cret-token")}, aiproxy.EINVALID, "reserved"},
		{"alias with a slash", admin.ProviderSettings{Alias: sptr("a/b")}, aiproxy.EINVALID, "one path segment"},
		{"alias with a space", admin.ProviderSettings{Alias: sptr("my groq")}, aiproxy.EINVALID, "one path segment"},
		{"alias of dots", admin.ProviderSettings{Alias: sptr("..")}, aiproxy.EINVALID, "one path segment"},
		{"unknown auth", admin.ProviderSettings{Auth: sptr("basic")}, aiproxy.EINVALID, "invalid auth scheme"},
		{"API root with a query", admin.ProviderSettings{APIRoot: sptr("/v1?x=1")}, aiproxy.EINVALID, "invalid API root"},
		{"API root with ..", admin.ProviderSettings{APIRoot: sptr("/v1/../admin")}, aiproxy.EINVALID, "invalid API root"},
		{"base URL that does not parse", admin.ProviderSettings{BaseURL: sptr("https://exa mple.com")}, aiproxy.EINVALID, "base URL"},
		{"base URL without scheme", admin.ProviderSettings{BaseURL: sptr("api.example.com")}, aiproxy.EINVALID, "base URL"},
		{"Authorization header", admin.ProviderSettings{Headers: map[string]string{"authorization": "Bearer x"}}, aiproxy.EINVALID, "cannot be pinned"},
		{"x-api-key header", admin.ProviderSettings{Headers: map[string]string{"X-API-KEY": "x"}}, aiproxy.EINVALID, "cannot be pinned"},
		{"header with a newline", admin.ProviderSettings{Headers: map[string]string{"X-A": "a\nb"}}, aiproxy.EINVALID, "invalid value"},
		{"header name with a space", admin.ProviderSettings{Headers: map[string]string{"X A": "a"}}, aiproxy.EINVALID, "invalid header name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.SetProvider(ctx, "api.openai.com", tc.set)
			if aiproxy.ErrorCode(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
				t.Errorf("SetProvider(%s) error = %v, want %s with %q on one line", tc.name, err, tc.code, tc.msg)
			}
		})
	}
	p, err := f.svc.Provider(ctx, "api.openai.com")
	if err != nil || p.Alias != "" || p.Auth != "bearer" || p.APIRoot != "/v1" || len(p.Headers) != 0 || p.BaseURL != "https://api.openai.com" {
		t.Errorf("api.openai.com after refused changes = %+v, %v; want it unchanged", p, err)
	}
	if _, err := f.svc.SetProvider(ctx, "api.mistral.ai", admin.ProviderSettings{Alias: sptr("mistral")}); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Errorf("SetProvider(unknown host) error = %v, want ENOTFOUND", err)
	}
}

// TestSetProvider_PinnedHeadersReachTheRequest: headers set with provider
// set come back canonical, and SetAuth/PinHeaders put the key in the
// provider's scheme with the pinned headers.
func TestSetProvider_PinnedHeadersReachTheRequest(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := t.Context()
	if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.openai.com", Key: "sk-real"}); err != nil {
		t.Fatal(err)
	}
	row, err := f.svc.SetProvider(ctx, "api.openai.com", admin.ProviderSettings{Headers: map[string]string{"openai-project": "proj_1"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"Openai-Project": "proj_1"}, row.Headers); diff != "" {
		t.Errorf("SetProvider() headers mismatch (-want +got):\n%s", diff)
	}
	p, err := f.svc.Provider(ctx, "api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer sk-cfw-user"}, "X-Api-Key": {"sk-cfw-user"}, "Openai-Project": {"proj_user"}}
	p.PinHeaders(h)
	p.SetAuth(h, p.Keys[0])
	want := http.Header{"Authorization": {"Bearer sk-real"}, "Openai-Project": {"proj_1"}}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("headers after PinHeaders and SetAuth mismatch (-want +got):\n%s", diff)
	}
}

// TestFindProvider_ModelRoutingAllocatesNothing: resolving a model name
// through the real service and store finds aliases in any case, and from
// a ProviderSet (the request's one view of the providers) allocates
// nothing, for a prefix that is an alias and for a native name with a "/".
// (FindProvider itself reads the auth_version each call, as every lookup
// does.)
func TestFindProvider_ModelRoutingAllocatesNothing(t *testing.T) {
	f := newService(t)
	ctx := t.Context()
	if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.groq.com", Key: "gsk", Alias: "groq"}); err != nil {
		t.Fatal(err)
	}
	set, err := f.svc.ProviderSet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	find := func(_ context.Context, name string) (aiproxy.Provider, bool, error) { return set.Find(name) }
	for _, tc := range []struct {
		model string
		ok    bool
	}{{"groq/llama-3.3-70b-versatile", true}, {"GROQ/llama-3.3-70b-versatile", true}, {"meta-llama/Llama-3.3-70B", false}, {"gpt-4o", false}} {
		for _, fn := range []models.Find{f.svc.FindProvider, find} {
			p, bare, ok, err := models.ResolveModel(ctx, tc.model, fn)
			if err != nil || ok != tc.ok || ok && (p.Host != "api.groq.com" || bare != "llama-3.3-70b-versatile") {
				t.Errorf("ResolveModel(%q) = %s, %q, %v, %v", tc.model, p.Host, bare, ok, err)
			}
		}
		if strings.ToLower(tc.model) != tc.model {
			continue // an upper-case alias is lowered once: allowed to allocate
		}
		if n := testing.AllocsPerRun(50, func() { models.ResolveModel(ctx, tc.model, find) }); n != 0 {
			t.Errorf("ResolveModel(%q) from a ProviderSet allocates %v times, want 0", tc.model, n)
		}
	}
}
