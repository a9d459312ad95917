package bench

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// memUpstream answers every request with body (and content type ct),
// after reading the request body, without a socket.
type memUpstream struct {
	ct   string
	body []byte
}

func (m memUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	n := int64(len(m.body))
	if m.ct == "text/event-stream" {
		n = -1
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {m.ct}}, ContentLength: n,
		Body: io.NopCloser(bytes.NewReader(m.body)), Request: r}, nil
}

// flushWriter is a flushable ResponseWriter that keeps nothing.
type flushWriter struct {
	h      http.Header
	status int
}

func (w *flushWriter) Header() http.Header         { return w.h }
func (w *flushWriter) WriteHeader(code int)        { w.status = code }
func (w *flushWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *flushWriter) Flush()                      {}

// BenchmarkBaselineServe is pkg/proxy's BenchmarkServe for the baseline:
// one request through the bare ReverseProxy (NewBaseline's configuration)
// to an in-memory upstream, so that the two proxies' own work per request
// compare directly (run both with -benchmem).
//
// Allocation budget: what httputil.ReverseProxy needs, ≤ 35 allocs/op,
// and 32 KiB/op for its copy buffer (it has no BufferPool).
func BenchmarkBaselineServe(b *testing.B) {
	var sse bytes.Buffer
	for range 20 {
		sse.WriteString(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	}
	sse.WriteString("data: [DONE]\n\n")
	for _, bc := range []struct {
		name, ct string
		up       []byte
		body     string
	}{
		{"json", "application/json", Completion, string(ChatBody)},
		{"stream", "text/event-stream", sse.Bytes(), string(StreamBody)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newBaseline(&url.URL{Scheme: "http", Host: "upstream.example"}, log.New(io.Discard, "", 0),
				memUpstream{ct: bc.ct, body: bc.up})
			req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8787"+Path, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer sk-cfw000000000000000000000000000000000000000000000")
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "OpenAI/Python 1.54.0")
			req.Header.Set("Accept", "application/json")
			req.ContentLength = int64(len(bc.body))
			w := &flushWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				req.Body = io.NopCloser(strings.NewReader(bc.body))
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, req)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}
