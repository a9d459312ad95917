package upstream_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/upstream"
)

// BenchmarkRoundTrip is one small JSON exchange over loopback keep-alive,
// through this transport and through net/http's, against the same server.
// The figures include the in-process server's work. Measured on the 2-core
// machine: upstream 47 µs, 52 allocs/op; net_http 60–71 µs, 79 allocs/op.
// Allocation budget (upstream): ≤ 55 allocs/op, server included; the
// transport's own are mostly http.ReadResponse's (the Response, its Header
// map, the body framing).
func BenchmarkRoundTrip(b *testing.B) {
	const answer = `{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	lean := &upstream.Transport{Dial: (&net.Dialer{}).DialContext, Fallback: http.DefaultTransport}
	std := &http.Transport{MaxIdleConnsPerHost: 100}
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
		body func() io.ReadCloser
	}{
		{"upstream", lean, func() io.ReadCloser { return upstream.BytesBody(body) }},
		{"net_http", std, func() io.ReadCloser { return io.NopCloser(strings.NewReader(string(body))) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions", nil)
				req.Body, req.ContentLength = tc.body(), int64(len(body))
				req.Header.Set("Content-Type", "application/json")
				res, err := tc.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, res.Body); err != nil {
					b.Fatal(err)
				}
				res.Body.Close()
			}
		})
	}
}
