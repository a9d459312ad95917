package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// benchSetup is a proxy over a real database with one user and one provider
// of three keys, whose upstream is an in-memory RoundTripper: the benchmarks
// measure the proxy's own work per request, without sockets.
type benchSetup struct {
	px  *Proxy
	svc *admin.Service
	rec *usage.Recorder
	key string
}

const benchHost = "bench.example"

func newBenchSetup(b *testing.B, rt http.RoundTripper) *benchSetup {
	return newBenchSetupWith(b, rt, nil)
}

// newBenchSetupWith is newBenchSetup with setup run on the service before
// the proxy is made, and the limiter and prices of serve when limited.
func newBenchSetupWith(b *testing.B, rt http.RoundTripper, setup func(*admin.Service, *store.DB, *Config)) *benchSetup {
	b.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(b.TempDir(), "aiproxy.db"))
	if err != nil {
		b.Fatal(err)
	}
	svc := admin.New(db)
	for i := range 3 {
		if err := svc.AddProviderKey(ctx, admin.ProviderKey{Host: benchHost, Key: "sk-upstream-bench-" + strconv.Itoa(i), BaseURL: "http://" + benchHost}); err != nil {
			b.Fatal(err)
		}
	}
	key, err := svc.CreateUser(ctx, "bench", admin.Expiry{})
	if err != nil {
		b.Fatal(err)
	}
	// As in `aiproxy serve`: JSON log lines (here to io.Discard, so the
	// handler's work counts but not the write) and a real usage recorder.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	rec := usage.New(svc.RecordUsage, log, 10000)
	cfg := Config{DefaultProvider: benchHost, Transport: rt}
	if setup != nil {
		setup(svc, db, &cfg)
	}
	px := New(svc, rec, log, cfg)
	b.Cleanup(func() {
		rec.Close(context.Background())
		db.Close()
	})
	return &benchSetup{px: px, svc: svc, rec: rec, key: key}
}

// BenchmarkProviderSelection is the provider half of a request: normalise
// the host, look the provider up (a cache hit, validated by reading the
// store's auth_version counter) and pick one of its keys in turn.
//
// The cache hands out the stored Provider (its Keys slice is shared, never
// copied); what allocates is the validating query.
func BenchmarkProviderSelection(b *testing.B) {
	s := newBenchSetup(b, roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, io.EOF }))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		host, err := aiproxy.NormalizeHost(benchHost)
		if err != nil {
			b.Fatal(err)
		}
		prov, err := s.px.provider(ctx, host)
		if err != nil {
			b.Fatal(err)
		}
		if k, err := s.px.pool.usable(prov, 1, s.px.now()); err != nil || len(k) == 0 {
			b.Fatal("no key")
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var benchCompletion = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"This is a test."},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17},"system_fingerprint":"fp_bench"}`)

// benchSSE is a 20-chunk stream as OpenAI sends it when asked for usage:
// "usage":null on every chunk, then the usage chunk and [DONE].
func benchSSE() []byte {
	var b bytes.Buffer
	for range 20 {
		b.WriteString(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n")
	}
	b.WriteString(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32}}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// memUpstream answers like a provider: it reads the request body and returns
// body with the given content type.
func memUpstream(ct string, body []byte) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		h := http.Header{"Content-Type": {ct}}
		n := int64(len(body))
		if ct == "text/event-stream" {
			n = -1
		}
		return &http.Response{StatusCode: http.StatusOK, Header: h, ContentLength: n,
			Body: io.NopCloser(bytes.NewReader(body)), Request: r}, nil
	})
}

// discardWriter is a flushable ResponseWriter that keeps nothing.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discardWriter) Flush()                      {}

// BenchmarkServe is one proxied request through Proxy.Serve, from the
// parsed request to the last byte written, with authentication, provider
// selection, request inspection, the usage scan, the log line and the usage
// record (written to SQLite by the recorder's goroutine, as in serve).
// The upstream is in memory: what is measured is aiproxy's own work.
//
// Allocation budget, per request (the benchmark itself adds 2: the request
// body reader and its NopCloser):
//   - json:   ≤ 40 allocs/op, ≤ 6 KiB/op. Most are net/http's: the
//     outgoing request, its header clone, the transport's response; then
//     the exchange, the body copy, the scanner, the log attributes.
//   - stream: ≤ 50 allocs/op; the same plus the stream scanner and the
//     injected stream_options (a copy of the body), and 0 per event.
//
// The 8 KiB copy buffer comes from a pool and must not show in B/op.
func BenchmarkServe(b *testing.B) {
	for _, bc := range []struct {
		name string
		ct   string
		up   []byte
		body string
	}{
		{"json", "application/json", benchCompletion, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say this is a test."}],"temperature":0.2}`},
		{"stream", "text/event-stream", benchSSE(), `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say this is a test."}],"temperature":0.2,"stream":true}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newBenchSetup(b, memUpstream(bc.ct, bc.up))
			req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8787/v1/chat/completions", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+s.key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "OpenAI/Python 1.54.0")
			req.Header.Set("Accept", "application/json")
			req.ContentLength = int64(len(bc.body))
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				req.Body = io.NopCloser(strings.NewReader(bc.body))
				clear(w.h)
				w.n, w.status = 0, 0
				s.px.Serve(w, req, Route{Key: s.key})
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// BenchmarkServeLimited is BenchmarkServe/json for a user with every limit
// set (high enough never to refuse), with prices, against the same request
// without limits: the cost of limits on the request path. Compare ns/op of
// the two (benchstat, -count 3).
func BenchmarkServeLimited(b *testing.B) {
	body := `{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"Say this is a test."}],"temperature":0.2}`
	for _, limited := range []bool{false, true} {
		b.Run(map[bool]string{false: "none", true: "every-limit"}[limited], func(b *testing.B) {
			s := newBenchSetupWith(b, memUpstream("application/json", benchCompletion), func(svc *admin.Service, db *store.DB, cfg *Config) {
				ctx := context.Background()
				if limited {
					up := admin.LimitsUpdate{}
					for _, kv := range [][2]string{{"rpm", "100000000"}, {"tpm", "100000000000"}, {"concurrent", "1000"},
						{"tokens", "100000000000/month"}, {"spend", "100000000/month"}, {"models", "gpt-*"}} {
						up.Changes = append(up.Changes, admin.LimitChange{Field: kv[0], Value: kv[1]})
					}
					if _, err := svc.SetLimits(ctx, "*", up); err != nil {
						b.Fatal(err)
					}
				}
				lim, err := limits.New(ctx, db, time.Now)
				if err != nil {
					b.Fatal(err)
				}
				tab, err := svc.PriceTable(ctx)
				if err != nil {
					b.Fatal(err)
				}
				cfg.Limits, cfg.Prices = lim, tab
			})
			benchServe(b, s, body)
		})
	}
}

// BenchmarkServeRouted is a request whose model names its provider
// (bench/gpt-4o-mini) against one that does not: what model routing adds.
func BenchmarkServeRouted(b *testing.B) {
	for _, model := range []string{"gpt-4o-mini", benchHost + "/gpt-4o-mini"} {
		b.Run(map[bool]string{false: "plain", true: "routed"}[strings.Contains(model, "/")], func(b *testing.B) {
			s := newBenchSetupWith(b, memUpstream("application/json", benchCompletion), func(svc *admin.Service, _ *store.DB, cfg *Config) {
				cfg.DefaultProvider = "other.example"
				if err := svc.AddProviderKey(context.Background(), admin.ProviderKey{Host: "other.example", Key: "sk-upstream-other-0", BaseURL: "http://other.example"}); err != nil {
					b.Fatal(err)
				}
			})
			benchServe(b, s, `{"model":"`+model+`","messages":[{"role":"user","content":"Say this is a test."}],"temperature":0.2}`)
		})
	}
}

// benchServe sends body through s's proxy b.N times.
func benchServe(b *testing.B, s *benchSetup, body string) {
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8787/v1/chat/completions", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req.Body = io.NopCloser(strings.NewReader(body))
		clear(w.h)
		w.n, w.status = 0, 0
		s.px.Serve(w, req, Route{Key: s.key})
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}
