// Package proxy is aiproxy's streaming reverse proxy: it authenticates a
// user key, picks one of the provider's stored keys, and forwards the
// request to the provider's base URL with net/http/httputil's ReverseProxy,
// streaming the answer back as it arrives and recording usage off the
// request path.
//
// What ReverseProxy does not do is done in its hooks: Rewrite sets the
// provider's URL and key and drops what must not go upstream;
// ModifyResponse wraps the answer's body to read usage, strip what aiproxy
// injected, scrub the provider key and abort a silent upstream;
// ErrorHandler gives the contract's OpenAI-shaped errors. Before any of
// that, Serve reads a JSON body once to learn the model (and to ask for
// usage on a stream), and refuses what it must refuse without reading the
// rest of the body.
package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/metrics"
	"github.com/aiproxy/aiproxy/pkg/netguard"
	"github.com/aiproxy/aiproxy/pkg/openai"
)

// Directory answers who holds a user key and where a provider is: the
// application service, read through its cache.
type Directory interface {
	Authenticate(ctx context.Context, key string) (aiproxy.User, error)
	Provider(ctx context.Context, host string) (aiproxy.Provider, error)
}

// Recorder takes usage records off the request path.
type Recorder interface {
	Record(aiproxy.Usage)
}

// Config tunes the proxy. Zero durations take the defaults noted.
type Config struct {
	// DefaultProvider serves requests without X-Host-Final.
	DefaultProvider string
	// Fallback providers are used when the store has no entry for a host
	// (OPENAI_API_KEY for api.openai.com).
	Fallback map[string]aiproxy.Provider
	// MaxBody is the largest request body accepted (default 32 MiB).
	MaxBody int64
	// DialTimeout bounds connecting to an upstream (default 10 s).
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 10 s).
	TLSHandshakeTimeout time.Duration
	// HeaderTimeout bounds the wait for the upstream's response headers
	// (default 10 min: a non-stream completion answers only when done).
	HeaderTimeout time.Duration
	// IdleTimeout aborts a response whose upstream sends nothing for this
	// long (default 5 min). A stream has no total deadline.
	IdleTimeout time.Duration
	// BodyTimeout bounds the wait for each read of the client's request
	// body (default 30 s), so that a client that stops sending does not
	// hold a handler.
	BodyTimeout time.Duration
	// WriteTimeout bounds each write of the answer to the client (default
	// 60 s), so that a client that stops reading does not hold a handler
	// and an upstream stream forever. It restarts at every write.
	WriteTimeout time.Duration
	// HTTP2 lets the transport speak HTTP/2 to HTTPS providers that offer
	// it. Off by default: see NewTransport.
	HTTP2 bool
	// DenyPrivate refuses, at dial time, upstreams whose address is in a
	// special-purpose range (SSRF-3). Off by default: local model servers
	// are a main use.
	DenyPrivate bool
	// Transport, when set, replaces the default upstream transport.
	Transport http.RoundTripper
	// KeyStates, when set, persists the states of refused provider keys.
	KeyStates KeyStates
	// Models, when set, answers GET /v1/models and /v1/models/{id} for
	// requests that name no provider: every provider's models.
	Models Models
	// Limits, when set, enforces per-user limits and budgets.
	Limits *limits.Limiter
	// Prices, when set, prices every request's usage (and lets Limits
	// reserve dollars).
	Prices Prices
	// Metrics, when set, counts requests, tokens, cost and open streams.
	Metrics *metrics.Metrics
}

// Prices prices a request's usage by the model sent upstream (pkg/prices).
type Prices interface {
	// Sync reloads the prices when they may have changed; cheap otherwise.
	Sync(ctx context.Context) error
	Lookup(model string) (aiproxy.Price, bool)
}

// Models is the merged model list of every provider (pkg/models).
type Models interface {
	// Serve answers the list (id "") or one model, filtered by allowed
	// (nil: every model).
	Serve(w http.ResponseWriter, r *http.Request, id string, allowed func(model string) bool)
}

// Proxy forwards authenticated requests to registered providers.
type Proxy struct {
	dir       Directory
	rec       Recorder
	log       *slog.Logger
	cfg       Config
	transport http.RoundTripper
	rp        *httputil.ReverseProxy
	pool      *keyPool
	next      atomic.Uint64 // round-robin over a provider's keys
	now       func() time.Time
}

// New returns a Proxy. rec may be nil, in which case usage is not recorded.
func New(dir Directory, rec Recorder, log *slog.Logger, cfg Config) *Proxy {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 32 << 20
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.TLSHandshakeTimeout <= 0 {
		cfg.TLSHandshakeTimeout = 10 * time.Second
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 60 * time.Second
	}
	if cfg.DefaultProvider == "" {
		cfg.DefaultProvider = "api.openai.com"
	}
	p := &Proxy{dir: dir, rec: rec, log: log, cfg: cfg, transport: cfg.Transport, now: time.Now}
	if p.transport == nil {
		p.transport = NewTransport(cfg)
	}
	p.pool = newKeyPool(cfg.KeyStates, p.now, cfg.Metrics.SetKeysResting)
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &poolTransport{next: p.transport, pool: p.pool},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// NewTransport returns the pooled upstream transport. It speaks HTTP/1.1
// with up to 100 idle connections per provider unless cfg.HTTP2 is set:
// measured with pkg/bench on a TLS upstream, HTTP/1.1 with a large pool
// was the faster of the two (README, "Upstream protocol"), and a TLS
// handshake is paid only when more requests than ever before run at once.
// It bounds the dial, TLS and header waits, with no total deadline, and
// asks for gzip only (net/http decodes it), so that every answer can be
// read for usage and scrubbed.
func NewTransport(cfg Config) *http.Transport {
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if cfg.DenyPrivate {
		d.Control = netguard.Control
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     cfg.HTTP2,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout: cfg.HeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}
	return t
}

// CloseIdle closes idle upstream connections.
func (p *Proxy) CloseIdle() {
	if t, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// Route says where a proxied request goes and who sent it.
type Route struct {
	// Host is the provider named by the path's first segment, which is then
	// not sent upstream ("" for X-Host-Final or the default provider).
	Host string
	// Key is the user key the client presented ("" for none).
	Key string
	// RequestID is the request's id, sent back as X-Request-Id and logged.
	RequestID string
}

// exchange is the state of one proxied request: what the hooks need, and
// what its usage record and log line say.
type exchange struct {
	start    time.Time
	user     aiproxy.User
	provider string
	model    string
	path     string
	status   int
	ttfb     time.Duration
	streamed bool
	metered  bool
	bytes    int64
	tokens   openai.Usage
	errMsg   string
	id       string // the request id; upID the upstream's own
	upID     string
	recorded bool // the request went upstream: it is usage
	failed   bool // aiproxy answered with its own error
	done     bool // finish has run
	eof      bool // the upstream's body ended cleanly

	// Set before the round trip, read by the hooks.
	target  *url.URL
	prov    aiproxy.Provider
	keys    []string       // the usable provider keys, in the order to try them
	key     string         // the provider key in use
	body    []byte         // the inspected body, when it was read
	req     openai.Request // body as it was read, to edit it without reading it again
	reqBody *clientBody
	strip   bool // aiproxy asked for usage: take it out of the answer
	cancel  context.CancelFunc
	rc      *http.ResponseController

	res   *limits.Reservation // nil: no limit applies
	price *aiproxy.Price      // the upstream model's price; nil: unpriced
	asked string              // the model as the user named it

	// Set by modifyResponse.
	stream  bool // an event stream is open (metrics)
	idle    *time.Timer
	scanner interface{ Usage() openai.Usage }
}

type exchangeKey struct{}

func exchangeOf(r *http.Request) *exchange { return r.Context().Value(exchangeKey{}).(*exchange) }

// Serve proxies r along route.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, route Route) {
	x := &exchange{start: p.now(), path: aiproxy.Clip(r.URL.Path, aiproxy.MaxPathLen), rc: http.NewResponseController(w),
		id: route.RequestID}
	defer p.finish(r, x)
	if answered, err := p.prepare(w, r, x, route); err != nil || answered {
		if err != nil {
			p.fail(w, r, x, err)
		}
		return
	}
	// The upstream request runs under ctx: the client's, which ends when
	// it leaves, and cancel, which the idle timer calls.
	ctx, cancel := context.WithCancel(context.WithValue(r.Context(), exchangeKey{}, x))
	defer cancel()
	x.cancel = cancel
	out := r.WithContext(ctx)
	if x.body != nil {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(x.body)), int64(len(x.body))
	} else if x.reqBody != nil {
		out.Body = x.reqBody
		// Let the upstream answer while the client is still sending.
		_ = x.rc.EnableFullDuplex()
	}
	x.recorded = true
	p.rp.ServeHTTP(w, out)
}

// prepare checks the request and fills x for the round trip: provider,
// user, target URL, provider key, and the body, read when it is JSON.
func (p *Proxy) prepare(w http.ResponseWriter, r *http.Request, x *exchange, route Route) (answered bool, err error) {
	host, named := route.Host, route.Host != ""
	if !named {
		switch hv := r.Header.Values("X-Host-Final"); len(hv) {
		case 0:
			host = p.cfg.DefaultProvider
		case 1:
			host, named = hv[0], true
		default:
			return false, aiproxy.Errorf(aiproxy.EINVALID, "X-Host-Final must be given once")
		}
	}
	norm, err := aiproxy.NormalizeHost(host)
	if err != nil {
		return false, aiproxy.Errorf(aiproxy.EINVALID, "X-Host-Final must be a bare host[:port] or alias of a registered provider")
	}
	x.provider = norm

	// The request's lookups share one check that the store's caches are
	// current, made by the first: it is answered as of that moment.
	ctx := aiproxy.WithLookupScope(r.Context())
	user, err := p.dir.Authenticate(ctx, route.Key)
	if err != nil {
		if aiproxy.ErrorCode(err) == aiproxy.EUNAUTHORIZED {
			// One answer for every refused key, whatever the reason.
			return false, aiproxy.InvalidKey()
		}
		return false, err
	}
	x.user = user

	escaped := r.URL.EscapedPath()
	if route.Host != "" {
		// /{host}/rest… goes upstream as /rest…
		_, escaped, _ = strings.Cut(strings.TrimPrefix(escaped, "/"), "/")
		escaped = "/" + escaped
	}
	if !named && p.cfg.Models != nil && r.Method == http.MethodGet {
		// GET /v1/models without a provider named: every provider's models.
		if id, ok := modelsPath(escaped); ok {
			var allowed func(string) bool
			if lim := p.cfg.Limits; lim != nil {
				allowed = func(m string) bool { return lim.ModelAllowed(user.ID, m) }
			}
			p.cfg.Models.Serve(w, r, id, allowed)
			return true, nil
		}
	}
	path, _ := url.PathUnescape(escaped) // targetURL refuses a bad escape
	x.metered = r.Method == http.MethodPost && metered(path)
	info, err := p.readBody(r, x)
	if err != nil {
		return false, err
	}

	x.asked = x.model
	var prov aiproxy.Provider
	routed := false
	if !named {
		prov, escaped, routed = p.routeModel(ctx, x, info.Model, escaped)
	}
	if !routed {
		if prov, err = p.provider(ctx, norm); err != nil {
			if aiproxy.ErrorCode(err) == aiproxy.ENOTFOUND {
				return false, aiproxy.Errorf(aiproxy.EUNKNOWNPROVIDER, "provider %s is not registered on this proxy", strconv.Quote(norm))
			}
			return false, err
		}
	}
	x.provider = prov.Host
	if len(prov.Keys) == 0 {
		return false, aiproxy.Errorf(aiproxy.EUPSTREAM, "provider %s has no key", prov.Host)
	}
	if x.target, err = targetURL(prov.BaseURL, escaped, r.URL.RawQuery); err != nil {
		return false, err
	}
	if x.body != nil && info.Stream && !info.IncludeUsage && prov.InjectUsage && strings.HasSuffix(x.target.Path, "/chat/completions") {
		if routed {
			x.req = openai.Inspect(x.body) // routing changed the model in it
		}
		if nb, ok := x.req.InjectIncludeUsage(); ok {
			x.body, x.strip = nb, true
		}
	}
	x.prov = prov
	x.keys, err = p.pool.usable(prov, int(p.next.Add(1)%uint64(len(prov.Keys))), p.now())
	if err != nil {
		return false, err
	}
	x.key = x.keys[0]
	return false, p.reserve(r, w, x, info)
}

// reserve prices the request and, for a limited user, reserves the most it
// can cost (CONTRACT section 5): the prompt estimated from the body (four
// bytes a token) plus the output it asks for at most. A refusal carries
// its own headers; an accepted limited request carries x-ratelimit-*.
func (p *Proxy) reserve(r *http.Request, w http.ResponseWriter, x *exchange, info openai.RequestInfo) error {
	ctx := r.Context()
	if p.cfg.Prices != nil {
		if err := p.cfg.Prices.Sync(ctx); err != nil {
			p.log.Warn("prices: reload failed, keeping the last ones", "err", err)
		}
		if pr, ok := p.cfg.Prices.Lookup(x.model); ok {
			x.price = &pr
		}
	}
	if p.cfg.Limits == nil {
		return nil
	}
	res, err := p.cfg.Limits.Reserve(limits.Request{
		UserID: x.user.ID,
		Model:  x.asked,
		// A JSON POST can spend tokens whether or not it names a model.
		Metered:         x.metered || x.body != nil && r.Method == http.MethodPost,
		PromptTokens:    int64(len(x.body)) / 4,
		MaxOutputTokens: info.MaxTokens,
		Price:           x.price,
	})
	if err != nil {
		limits.Headers(err, w.Header())
		return err
	}
	x.res = res
	res.Headers(w.Header())
	return nil
}

func (p *Proxy) provider(ctx context.Context, host string) (aiproxy.Provider, error) {
	prov, err := p.dir.Provider(ctx, host)
	if aiproxy.ErrorCode(err) == aiproxy.ENOTFOUND {
		if fb, ok := p.cfg.Fallback[host]; ok {
			return fb, nil
		}
	}
	return prov, err
}

// Registered reports whether host names a provider the proxy can reach;
// the server uses it to route /{host}/… paths.
func (p *Proxy) Registered(ctx context.Context, host string) bool {
	norm, err := aiproxy.NormalizeHost(host)
	if err != nil {
		return false
	}
	_, err = p.provider(ctx, norm)
	return err == nil
}
