package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"

	"github.com/aiproxy/aiproxy/pkg/metrics"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
)

// GET /metrics counts the requests made, by provider and status class, and
// the tokens; a client that is neither on loopback nor holds the admin
// token gets the 403 of an unknown route.
func TestMetrics_ScrapeCountsRequests(t *testing.T) {
	m := metrics.New(metrics.Options{})
	const token = "Metrics-Admin-Token-0123456789abcdef"
	h := newHarness(t, harnessOpts{proxy: proxy.Config{Metrics: m}, server: server.Config{Metrics: m.Handler(), AccessToken: token}})
	for range 3 {
		readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)))
	}
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, nil)) // 401
	h.inflight.Wait()

	res := h.do("GET", "/metrics", "", nil) // from loopback
	if res.StatusCode != 200 {
		t.Fatalf("loopback scrape: %d", res.StatusCode)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	count := func(class string) float64 {
		var n float64
		for _, mt := range fams["aiproxy_requests_total"].GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["status_class"] == class && labels["provider"] == "api.openai.com" {
				n += mt.GetCounter().GetValue()
			}
		}
		return n
	}
	if count("2xx") != 3 || count("4xx") != 1 {
		t.Errorf("requests 2xx %v 4xx %v, want 3 and 1", count("2xx"), count("4xx"))
	}
	if fams["aiproxy_tokens_total"] == nil || fams["aiproxy_request_duration_seconds"] == nil {
		t.Errorf("missing families: %v", keysOf(fams))
	}

	// Not from loopback: only the admin token opens it.
	srv := server.New(h.svc, proxy.New(h.svc, nil, slog.New(slog.DiscardHandler), proxy.Config{}), slog.New(slog.DiscardHandler), server.Config{Metrics: m.Handler(), AccessToken: token})
	for _, tc := range []struct {
		auth string
		want int
	}{{"", 403}, {"Bearer wrong", 403}, {"Bearer " + token, 200}} {
		req := httptest.NewRequestWithContext(context.Background(), "GET", "/metrics", nil)
		req.RemoteAddr = "192.0.2.7:4000"
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code != tc.want || tc.want == 403 && !strings.Contains(w.Body.String(), `"forbidden"`) {
			t.Errorf("%q from afar: %d %s", tc.auth, w.Code, w.Body.String())
		}
	}
	_ = http.StatusOK
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
