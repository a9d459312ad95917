package metrics_test

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/aiproxy/aiproxy/pkg/metrics"
)

// scrape GETs m's handler and parses the answer with Prometheus' own text
// parser.
func scrape(t *testing.T, m *metrics.Metrics) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics = %d", rec.Code)
	}
	body := rec.Body.String()
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs, body
}

// value returns the value of the series of family name whose labels
// include want, and whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func i64(v int64) *int64     { return &v }
func f64(v float64) *float64 { return &v }

type queue struct{ queued, dropped, written int64 }

func (q *queue) Queued() int    { return int(q.queued) }
func (q *queue) Dropped() int64 { return q.dropped }
func (q *queue) Written() int64 { return q.written }

// TestMetrics_CountsMatchRequests: after a known set of requests, every
// series counts exactly them, parsed by Prometheus' text parser; the Go
// runtime and process collectors are there; no label holds a key.
func TestMetrics_CountsMatchRequests(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Options{})
	const key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
	for i := range 7 {
		m.RequestDone(metrics.Request{Provider: "api.openai.com", Route: "chat", Status: 200, Duration: time.Second,
			TTFB: 100 * time.Millisecond, Model: "gpt-4o", User: "alice", PromptTokens: i64(10), CompletionTokens: i64(5), CostUSD: f64(0.25)})
		if i < 3 {
			m.RequestDone(metrics.Request{Provider: "api.groq.com", Route: "chat", Status: 429, Duration: time.Millisecond, User: "bob"})
		}
	}
	m.RequestDone(metrics.Request{Provider: "api.groq.com", Route: "embeddings", Status: 0, Duration: time.Millisecond})
	m.RequestDone(metrics.Request{Provider: key, Route: "other", Status: 502, Model: key, PromptTokens: i64(1)})
	m.StreamOpened()
	m.StreamOpened()
	m.StreamClosed()
	m.SetKeysResting("api.groq.com", 2)
	q := &queue{queued: 4, dropped: 1, written: 99}
	m.WatchUsage(q)
	m.UsageBatch(10, 3*time.Millisecond, nil)
	m.UsageBatch(10, 5*time.Millisecond, errors.New("busy"))

	mfs, body := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"aiproxy_requests_total", map[string]string{"provider": "api.openai.com", "route": "chat", "status_class": "2xx"}, 7},
		{"aiproxy_requests_total", map[string]string{"provider": "api.groq.com", "route": "chat", "status_class": "4xx"}, 3},
		{"aiproxy_requests_total", map[string]string{"provider": "api.groq.com", "route": "embeddings", "status_class": "none"}, 1},
		{"aiproxy_requests_total", map[string]string{"provider": "redacted", "status_class": "5xx"}, 1},
		{"aiproxy_request_duration_seconds", map[string]string{"provider": "api.openai.com", "route": "chat"}, 7},
		{"aiproxy_time_to_first_byte_seconds", map[string]string{"provider": "api.openai.com", "route": "chat"}, 7},
		{"aiproxy_tokens_total", map[string]string{"provider": "api.openai.com", "model": "gpt-4o", "kind": "prompt"}, 70},
		{"aiproxy_tokens_total", map[string]string{"provider": "api.openai.com", "model": "gpt-4o", "kind": "completion"}, 35},
		{"aiproxy_cost_usd_total", map[string]string{"provider": "api.openai.com", "model": "gpt-4o"}, 1.75},
		{"aiproxy_open_streams", nil, 1},
		{"aiproxy_provider_keys_resting", map[string]string{"provider": "api.groq.com"}, 2},
		{"aiproxy_usage_queue_depth", nil, 4},
		{"aiproxy_usage_dropped_total", nil, 1},
		{"aiproxy_usage_written_total", nil, 99},
		{"aiproxy_usage_batch_duration_seconds", nil, 2},
		{"aiproxy_usage_batch_errors_total", nil, 1},
	} {
		got, ok := value(mfs, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(mfs, "aiproxy_time_to_first_byte_seconds", map[string]string{"provider": "api.groq.com"}); ok {
		t.Errorf("a request without a first byte was observed in aiproxy_time_to_first_byte_seconds")
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total"} {
		if mfs[name] == nil && !(name == "process_cpu_seconds_total" && !processMetrics()) {
			t.Errorf("%s missing: the Go runtime and process collectors must be registered", name)
		}
	}
	if mfs["aiproxy_user_requests_total"] != nil {
		t.Errorf("per-user series without PerUser")
	}
	if strings.Contains(body, key) || strings.Contains(body, "sk-proj") {
		t.Errorf("a label holds a key:\n%s", body)
	}
}

// TestMetrics_PerUserOnlyWhenAsked: per-user series exist with PerUser.
func TestMetrics_PerUserOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Options{PerUser: true})
	for range 3 {
		m.RequestDone(metrics.Request{Provider: "p", Route: "chat", Status: 200, User: "alice", PromptTokens: i64(2), CompletionTokens: i64(1)})
	}
	mfs, _ := scrape(t, m)
	if got, _ := value(mfs, "aiproxy_user_requests_total", map[string]string{"user": "alice", "status_class": "2xx"}); got != 3 {
		t.Errorf("aiproxy_user_requests_total{user=alice} = %v, want 3", got)
	}
	if got, _ := value(mfs, "aiproxy_user_tokens_total", map[string]string{"user": "alice", "kind": "prompt"}); got != 6 {
		t.Errorf("aiproxy_user_tokens_total{user=alice,kind=prompt} = %v, want 6", got)
	}
}

// TestMetrics_ModelLabelsBounded: clients cannot grow the model label
// without bound: past MaxModels distinct names, the rest count as other.
func TestMetrics_ModelLabelsBounded(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Options{})
	for i := range metrics.MaxModels + 50 {
		m.RequestDone(metrics.Request{Provider: "p", Route: "chat", Status: 200, Model: "m" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), PromptTokens: i64(1)})
	}
	mfs, _ := scrape(t, m)
	if n := len(mfs["aiproxy_tokens_total"].GetMetric()); n != metrics.MaxModels+1 {
		t.Errorf("aiproxy_tokens_total has %d series, want %d (the cap and other)", n, metrics.MaxModels+1)
	}
	if got, _ := value(mfs, "aiproxy_tokens_total", map[string]string{"model": "other"}); got != 50 {
		t.Errorf("aiproxy_tokens_total{model=other} = %v, want 50", got)
	}
}

// TestMetrics_NilIsOff: serve without --metrics passes a nil *Metrics;
// every method is then a no-op.
func TestMetrics_NilIsOff(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	m.RequestDone(metrics.Request{Status: 200})
	m.StreamOpened()
	m.StreamClosed()
	m.SetKeysResting("p", 1)
	m.UsageBatch(1, time.Millisecond, nil)
	m.WatchUsage(&queue{})
}

// BenchmarkRequestDone is the metrics' own cost per proxied request: one
// RequestDone with tokens and cost, and a stream opened and closed.
func BenchmarkRequestDone(b *testing.B) {
	m := metrics.New(metrics.Options{})
	providers := []string{"api.openai.com", "api.groq.com", "api.anthropic.com"}
	models := []string{"gpt-4o", "llama-3.3-70b", "claude-sonnet-4"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.StreamOpened()
			m.RequestDone(metrics.Request{Provider: providers[i%3], Route: "chat", Status: 200, Duration: 1500 * time.Millisecond,
				TTFB: 300 * time.Millisecond, Model: models[i%3], PromptTokens: i64(100), CompletionTokens: i64(50), CostUSD: f64(0.001)})
			m.StreamClosed()
			i++
		}
	})
}

// BenchmarkScrape is the cost of one GET /metrics with the Go and process
// collectors.
func BenchmarkScrape(b *testing.B) {
	m := metrics.New(metrics.Options{})
	m.RequestDone(metrics.Request{Provider: "p", Route: "chat", Status: 200, Model: "m", PromptTokens: i64(1)})
	for b.Loop() {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		io.Copy(io.Discard, bytes.NewReader(rec.Body.Bytes()))
	}
}
