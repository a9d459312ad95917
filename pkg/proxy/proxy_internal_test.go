package proxy

import (
	"testing"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// The path goes upstream as the client encoded it, under the base URL's
// path; a dot segment or an encoded ? or # is refused (issue: paths on
// /{host}/… were forwarded decoded).
func TestTargetURL_KeepsEncodingAndRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		base, path, query string
		want              string // "" = refused with EINVALID
	}{
		{"https://api.groq.com", "/openai/v1/chat/completions", "", "https://api.groq.com/openai/v1/chat/completions"},
		{"https://api.groq.com/openai", "/v1/models", "", "https://api.groq.com/openai/v1/models"},
		{"https://h.example/", "/v1/models/org%2Fmodel", "", "https://h.example/v1/models/org%2Fmodel"},
		{"https://h.example", "/v1/models/a%20b", "x=1", "https://h.example/v1/models/a%20b?x=1"},
		{"https://h.example/base", "/..%2F..%2Fadmin", "", ""},
		{"https://h.example/base", "/v1/%2E%2E/x", "", ""},
		{"https://h.example", "/v1/./x", "", ""},
		{"https://h.example", "/v1/chat/completions%3F", "", ""},
		{"https://h.example", "/v1/chat/completions%23frag", "", ""},
		{"https://h.example", "/v1/bad%zz", "", ""},
	} {
		u, err := targetURL(tc.base, tc.path, tc.query)
		if tc.want == "" {
			if aiproxy.ErrorCode(err) != aiproxy.EINVALID {
				t.Errorf("targetURL(%q, %q) = %v, %v; want EINVALID", tc.base, tc.path, u, err)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("targetURL(%q, %q, %q) = %v, %v; want %s", tc.base, tc.path, tc.query, u, err, tc.want)
		}
	}
}

// A user key never leaves in the query string.
func TestStripKeys_DropsKeyParameters(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "",
		"a=1&b=2":                   "a=1&b=2",
		"key=sk-cfwabc":             "",
		"a=1&KEY=x&b=2":             "a=1&b=2",
		"a=1&token=sk-cfw123":       "a=1",
		"a=1&t=%73k-cfw123&monkey=": "a=1&monkey=",
	} {
		if got := stripKeys(in); got != want {
			t.Errorf("stripKeys(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMetered(t *testing.T) {
	for path, want := range map[string]bool{
		"/v1/chat/completions":        true,
		"/openai/v1/chat/completions": true,
		"/v1/chat/completions/":       true,
		"/v1/completions":             true,
		"/v1/responses":               true,
		"/v1/embeddings":              true,
		"/v1/messages":                true,
		"/v1/models":                  false,
		"/v1/messages/count_tokens":   false,
		"/v1/responses/resp_1":        false,
		"/v1/audio/transcriptions":    false,
	} {
		if got := metered(path); got != want {
			t.Errorf("metered(%q) = %v, want %v", path, got, want)
		}
	}
}
