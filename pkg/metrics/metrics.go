// Package metrics is aiproxy's Prometheus instrumentation (serve --metrics):
// one Metrics per process, with its own registry (Go runtime and process
// collectors included), served by Handler at GET /metrics. The proxy calls
// its methods as requests end and streams open and close; the usage
// recorder reports its queue through WatchUsage and UsageBatch.
//
// Every series is named aiproxy_…. Labels hold provider hosts, route
// kinds, status classes and model names, never a key: a value shaped like
// a key is replaced by "redacted", and model names beyond MaxModels distinct
// ones are counted as "other", so that clients cannot grow the series
// without bound. Per-user series exist only with Options.PerUser.
package metrics

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxModels is the most distinct model label values; later ones are
// "other".
const MaxModels = 256

// MaxUsers is the most distinct user label values of the per-user series.
const MaxUsers = 10000

// Options configure New.
type Options struct {
	// PerUser adds aiproxy_user_requests_total and
	// aiproxy_user_tokens_total, labelled by user name: one series per
	// user, so only where the number of users is small
	// (--metrics-per-user).
	PerUser bool
}

// Metrics holds aiproxy's collectors and their registry.
type Metrics struct {
	reg *prometheus.Registry

	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	ttfb       *prometheus.HistogramVec
	tokens     *prometheus.CounterVec
	cost       *prometheus.CounterVec
	streams    prometheus.Gauge
	batch      prometheus.Histogram
	batchErrs  prometheus.Counter
	resting    *prometheus.GaugeVec
	userReqs   *prometheus.CounterVec
	userTokens *prometheus.CounterVec

	models bounded
	users  bounded
}

// Request is one proxied request, as it ended.
type Request struct {
	Provider string        // the provider's host ("" when none was chosen)
	Route    string        // route kind: chat, responses, embeddings, messages, models, other
	Status   int           // the status sent to the client; 0 when none was
	Duration time.Duration // from arrival to the end of the response
	TTFB     time.Duration // to the upstream's first byte; 0 when none came
	Model    string        // the model the upstream named, else the one asked for
	User     string        // the user's name (per-user series only)
	// Tokens and cost, when the upstream reported usage; nil otherwise.
	PromptTokens, CompletionTokens *int64
	CostUSD                        *float64
}

// New returns a Metrics with its own registry.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), models: bounded{max: MaxModels}, users: bounded{max: MaxUsers}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aiproxy_requests_total",
		Help: "Proxied requests by provider, route kind and status class (2xx, 4xx, 5xx; none when no status was sent).",
	}, []string{"provider", "route", "status_class"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "aiproxy_request_duration_seconds",
		Help:    "Time from a proxied request's arrival to the end of its response (streams included).",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600},
	}, []string{"provider", "route"})
	m.ttfb = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "aiproxy_time_to_first_byte_seconds",
		Help:    "Time from a proxied request's arrival to the upstream's first response byte.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"provider", "route"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aiproxy_tokens_total",
		Help: "Tokens reported by upstreams, by provider, model and kind (prompt or completion).",
	}, []string{"provider", "model", "kind"})
	m.cost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aiproxy_cost_usd_total",
		Help: "Cost of priced requests in US dollars, by provider and model.",
	}, []string{"provider", "model"})
	m.streams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "aiproxy_open_streams",
		Help: "Streamed responses in progress.",
	})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "aiproxy_usage_batch_duration_seconds",
		Help:    "Time to write one batch of usage records to the database.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	})
	m.batchErrs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "aiproxy_usage_batch_errors_total",
		Help: "Failed writes of a batch of usage records (retried; see aiproxy_usage_dropped_total).",
	})
	m.resting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aiproxy_provider_keys_resting",
		Help: "Provider keys resting after a 429, or rejected after a 401/403, by provider.",
	}, []string{"provider"})
	m.reg.MustRegister(m.requests, m.duration, m.ttfb, m.tokens, m.cost, m.streams, m.batch, m.batchErrs, m.resting,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if o.PerUser {
		m.userReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aiproxy_user_requests_total",
			Help: "Proxied requests by user and status class.",
		}, []string{"user", "status_class"})
		m.userTokens = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aiproxy_user_tokens_total",
			Help: "Tokens reported by upstreams, by user and kind (prompt or completion).",
		}, []string{"user", "kind"})
		m.reg.MustRegister(m.userReqs, m.userTokens)
	}
	return m
}

// Handler serves the metrics in Prometheus' text format (or OpenMetrics,
// when asked). It does no authorization: the router decides who may ask.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// Registry is the registry, for a test or another handler.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// RequestDone counts one proxied request as it ended. A nil *Metrics
// (serve without --metrics) does nothing.
func (m *Metrics) RequestDone(r Request) {
	if m == nil {
		return
	}
	provider, route, class := label(r.Provider), label(r.Route), statusClass(r.Status)
	m.requests.WithLabelValues(provider, route, class).Inc()
	m.duration.WithLabelValues(provider, route).Observe(r.Duration.Seconds())
	if r.TTFB > 0 {
		m.ttfb.WithLabelValues(provider, route).Observe(r.TTFB.Seconds())
	}
	model := ""
	if r.PromptTokens != nil || r.CompletionTokens != nil || r.CostUSD != nil {
		model = m.models.label(r.Model)
	}
	if r.PromptTokens != nil && *r.PromptTokens > 0 {
		m.tokens.WithLabelValues(provider, model, "prompt").Add(float64(*r.PromptTokens))
	}
	if r.CompletionTokens != nil && *r.CompletionTokens > 0 {
		m.tokens.WithLabelValues(provider, model, "completion").Add(float64(*r.CompletionTokens))
	}
	if r.CostUSD != nil && *r.CostUSD > 0 {
		m.cost.WithLabelValues(provider, model).Add(*r.CostUSD)
	}
	if m.userReqs != nil && r.User != "" {
		user := m.users.label(r.User)
		m.userReqs.WithLabelValues(user, class).Inc()
		if r.PromptTokens != nil && *r.PromptTokens > 0 {
			m.userTokens.WithLabelValues(user, "prompt").Add(float64(*r.PromptTokens))
		}
		if r.CompletionTokens != nil && *r.CompletionTokens > 0 {
			m.userTokens.WithLabelValues(user, "completion").Add(float64(*r.CompletionTokens))
		}
	}
}

// StreamOpened counts a streamed response that started; call StreamClosed
// when it ends, however it ends.
func (m *Metrics) StreamOpened() {
	if m != nil {
		m.streams.Inc()
	}
}

// StreamClosed counts a streamed response that ended.
func (m *Metrics) StreamClosed() {
	if m != nil {
		m.streams.Dec()
	}
}

// SetKeysResting sets how many of provider's keys are resting or rejected.
func (m *Metrics) SetKeysResting(provider string, n int) {
	if m != nil {
		m.resting.WithLabelValues(label(provider)).Set(float64(n))
	}
}

// UsageQueue is what WatchUsage reads from the usage recorder
// (*usage.Recorder).
type UsageQueue interface {
	Queued() int    // records waiting to be written
	Dropped() int64 // records dropped since the start
	Written() int64 // records written since the start
}

// WatchUsage exports q's queue depth and its dropped and written counts,
// read at each scrape: aiproxy_usage_queue_depth,
// aiproxy_usage_dropped_total and aiproxy_usage_written_total. Call it once.
func (m *Metrics) WatchUsage(q UsageQueue) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "aiproxy_usage_queue_depth",
			Help: "Usage records waiting to be written to the database.",
		}, func() float64 { return float64(q.Queued()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "aiproxy_usage_dropped_total",
			Help: "Usage records dropped: the queue was full, or a write failed for good.",
		}, func() float64 { return float64(q.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "aiproxy_usage_written_total",
			Help: "Usage records written to the database.",
		}, func() float64 { return float64(q.Written()) }),
	)
}

// UsageBatch observes one batch write of the usage recorder; it has the
// shape of usage.Recorder.OnBatch.
func (m *Metrics) UsageBatch(records int, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.batch.Observe(took.Seconds())
	if err != nil {
		m.batchErrs.Inc()
	}
}

// statusClass is "2xx" … "5xx", or "none" when no status was sent.
func statusClass(status int) string {
	switch {
	case status >= 100 && status < 200:
		return "1xx"
	case status < 300 && status >= 200:
		return "2xx"
	case status < 400 && status >= 300:
		return "3xx"
	case status < 500 && status >= 400:
		return "4xx"
	case status < 600 && status >= 500:
		return "5xx"
	}
	return "none"
}

// label returns v, or "redacted" when v looks like a key: no label ever
// holds one, even one that reached a field by mistake.
func label(v string) string {
	if looksLikeKey(v) {
		return "redacted"
	}
	return v
}

func looksLikeKey(v string) bool {
	if len(v) < 20 {
		return false
	}
	for _, p := range []string{"sk-", "gsk_", "AIza", "xai-"} {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	return len(v) >= 36 && !strings.ContainsAny(v, "./:@ ")
}

// bounded hands out up to max distinct label values, then "other".
type bounded struct {
	max  int
	seen sync.Map // value → struct{}
	mu   sync.Mutex
	n    int
}

func (b *bounded) label(v string) string {
	v = label(v)
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen.Load(v); ok {
		return v
	}
	if b.n >= b.max {
		return "other"
	}
	b.n++
	b.seen.Store(v, struct{}{})
	return v
}
