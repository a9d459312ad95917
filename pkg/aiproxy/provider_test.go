package aiproxy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// TestSetAuth_EachSchemeCarriesOnlyTheProviderKey: the key goes in the
// provider's scheme header, and every other key header (a user's key in
// any scheme) is gone.
func TestSetAuth_EachSchemeCarriesOnlyTheProviderKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		auth string
		want http.Header
	}{
		{aiproxy.AuthBearer, http.Header{"Authorization": {"Bearer pk"}, "Accept": {"*/*"}}},
		{"", http.Header{"Authorization": {"Bearer pk"}, "Accept": {"*/*"}}},
		{aiproxy.AuthXAPIKey, http.Header{"X-Api-Key": {"pk"}, "Accept": {"*/*"}}},
		{aiproxy.AuthAPIKey, http.Header{"Api-Key": {"pk"}, "Accept": {"*/*"}}},
		{aiproxy.AuthGoogAPIKey, http.Header{"X-Goog-Api-Key": {"pk"}, "Accept": {"*/*"}}},
	}
	for _, tc := range tests {
		h := http.Header{"Authorization": {"Bearer sk-cfw-user"}, "X-Api-Key": {"sk-cfw-user"}, "Api-Key": {"sk-cfw-user"},
			"X-Goog-Api-Key": {"sk-cfw-user"}, "Accept": {"*/*"}}
		aiproxy.Provider{Auth: tc.auth}.SetAuth(h, "pk")
		if diff := cmp.Diff(tc.want, h); diff != "" {
			t.Errorf("SetAuth(%q) headers mismatch (-want +got):\n%s", tc.auth, diff)
		}
	}
}

func TestDefaults_WellKnownHosts(t *testing.T) {
	t.Parallel()
	tests := []struct{ host, auth, root string }{
		{"api.openai.com", "bearer", "/v1"},
		{"api.groq.com", "bearer", "/openai/v1"},
		{"api.anthropic.com", "x-api-key", "/v1"},
		{"myres.openai.azure.com", "api-key", "/v1"},
		{"generativelanguage.googleapis.com", "x-goog-api-key", "/v1"},
		{"localhost:11434", "bearer", "/v1"},
	}
	for _, tc := range tests {
		if a, r := aiproxy.DefaultAuth(tc.host), aiproxy.DefaultAPIRootFor(tc.host); a != tc.auth || r != tc.root {
			t.Errorf("defaults of %s = %s, %s; want %s, %s", tc.host, a, r, tc.auth, tc.root)
		}
	}
}

func TestNormalizeAlias(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"groq": "groq", "Groq": "groq", "my-llm_2.local": "my-llm_2.local"} {
		if got, err := aiproxy.NormalizeAlias(in); err != nil || got != want {
			t.Errorf("NormalizeAlias(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "v1", "V1", "v20", "openai", "me", "admin", "healthz", "metrics", "dashboard",
		"a/b", "a b", ".hidden", "-x", "a..b", "a.", "é", strings.Repeat("a", 64)} {
		if got, err := aiproxy.NormalizeAlias(in); aiproxy.ErrorCode(err) != aiproxy.EINVALID {
			t.Errorf("NormalizeAlias(%q) = %q, %v; want EINVALID", in, got, err)
		}
	}
}

func TestNormalizeAPIRoot(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"/v1": "/v1", "v1": "/v1", "/openai/v1/": "/openai/v1", "": "/", "/": "/", "/v1beta/openai": "/v1beta/openai"} {
		if got, err := aiproxy.NormalizeAPIRoot(in); err != nil || got != want {
			t.Errorf("NormalizeAPIRoot(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/v1?x=1", "/v1#f", "https://x/v1", "//x/v1", "/v1/../admin", "/a//b", "/a b"} {
		if got, err := aiproxy.NormalizeAPIRoot(in); err == nil {
			t.Errorf("NormalizeAPIRoot(%q) = %q, want an error", in, got)
		}
	}
	if got := (aiproxy.Provider{BaseURL: "http://h", APIRoot: "/"}).APIURL("/models"); got != "http://h/models" {
		t.Errorf("APIURL with root / = %q, want http://h/models", got)
	}
}

// TestProvider_JSONAliasNullWhenNone: absent values are null in JSON.
func TestProvider_JSONAliasNullWhenNone(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(aiproxy.Provider{Host: "h", Keys: []string{"secret"}})
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if v, ok := m["alias"]; !ok || v != nil {
		t.Errorf("alias = %v (present %v), want null", v, ok)
	}
	if h, ok := m["headers"].(map[string]any); !ok || len(h) != 0 {
		t.Errorf("headers = %v, want {}", m["headers"])
	}
	if strings.Contains(string(b), "secret") {
		t.Errorf("JSON %s holds a key", b)
	}
	b, _ = json.Marshal(aiproxy.Provider{Host: "h", Alias: "groq"})
	if !strings.Contains(string(b), `"alias":"groq"`) {
		t.Errorf("JSON %s, want the alias", b)
	}
}
