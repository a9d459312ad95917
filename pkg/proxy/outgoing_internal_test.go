package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestOutgoingHeader: the one-pass copy removes exactly what Clone followed
// by removeHopHeaders and the deletions did.
func TestOutgoingHeader(t *testing.T) {
	t.Parallel()
	old := func(in http.Header) http.Header {
		h := in.Clone()
		removeHopHeaders(h)
		for _, k := range []string{"X-Host-Final", "Accept-Encoding", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host",
			"X-Forwarded-Proto", "X-Real-Ip", "Cf-Connecting-Ip", "True-Client-Ip", "Cookie"} {
			h.Del(k)
		}
		return h
	}
	tests := []struct {
		name string
		in   http.Header
	}{
		{"sdk", http.Header{"Authorization": {"Bearer sk-cfw1"}, "Content-Type": {"application/json"},
			"User-Agent": {"OpenAI/Python 1.54.0"}, "X-Stainless-Os": {"Linux"}, "Accept-Encoding": {"gzip"}}},
		{"hop and client-ip headers", http.Header{"Connection": {"keep-alive, X-Secret ,x-other"}, "X-Secret": {"s"},
			"X-Other": {"o", "p"}, "Keep-Alive": {"timeout=5"}, "Te": {"trailers"}, "X-Host-Final": {"api.groq.com"},
			"X-Forwarded-For": {"1.2.3.4"}, "Cookie": {"a=b"}, "Proxy-Authorization": {"Basic x"}, "Accept": {"*/*"}}},
		{"nil and empty values", http.Header{"X-Nil": nil, "X-Empty": {}, "X-Two": {"1", "2"}}},
		{"none", http.Header{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(old(tc.in), outgoingHeader(tc.in)); diff != "" {
				t.Errorf("outgoingHeader() differs from Clone and Del (-old +new):\n%s", diff)
			}
		})
	}
}

func TestChatCompletions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ a, b string }{
		{"", "/v1/chat/completions"}, {"/openai/v1/chat/completions", "/api.groq.com/openai/v1/chat/completions"},
		{"/v1/chat/completions", "/"}, {"/v1/chat/completions", ""}, {"/v1/chat/complet", "ions"},
		{"/v1/chat", "/completions"}, {"", "/v1/completions"}, {"/v1/chat/completions/x", "/y"}, {"", ""},
		{"x", "/chat/completions"}, {"/chat/completions", "s"},
	} {
		if got, want := chatCompletions(tc.a, tc.b), strings.HasSuffix(tc.a+tc.b, "/chat/completions"); got != want {
			t.Errorf("chatCompletions(%q, %q) = %v, want %v", tc.a, tc.b, got, want)
		}
	}
}
