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
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/httperr"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/metrics"
	"github.com/aiproxy/aiproxy/pkg/netguard"
	"github.com/aiproxy/aiproxy/pkg/openai"
	"github.com/aiproxy/aiproxy/pkg/scrub"
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
	keys    []string // the usable provider keys, in the order to try them
	key     string   // the provider key in use
	body    []byte   // the inspected body, when it was read
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

	user, err := p.dir.Authenticate(r.Context(), route.Key)
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
		prov, escaped, routed = p.routeModel(r.Context(), x, info.Model, escaped)
	}
	if !routed {
		if prov, err = p.provider(r.Context(), norm); err != nil {
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
		if nb, ok := openai.InjectIncludeUsage(x.body); ok {
			x.body, x.strip = nb, true
		}
	}
	x.prov = prov
	x.keys, err = p.pool.usable(prov, int(p.next.Add(1)%uint64(len(prov.Keys))), p.now())
	if err != nil {
		return false, err
	}
	x.key = x.keys[0]
	return false, p.reserve(r.Context(), w, x, info)
}

// reserve prices the request and, for a limited user, reserves the most it
// can cost (CONTRACT section 5): the prompt estimated from the body (four
// bytes a token) plus the output it asks for at most. A refusal carries
// its own headers; an accepted limited request carries x-ratelimit-*.
func (p *Proxy) reserve(ctx context.Context, w http.ResponseWriter, x *exchange, info openai.RequestInfo) error {
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
		UserID:          x.user.ID,
		Model:           x.asked,
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

// routeModel is model routing (CONTRACT section 6): a JSON body whose
// model is ALIAS/MODEL or HOST/MODEL for a registered provider goes to that
// provider as MODEL, with the path's leading /v1 replaced by the provider's
// API root. Any other model, one with a native "/" included, goes unchanged
// to the default provider.
func (p *Proxy) routeModel(ctx context.Context, x *exchange, model, escaped string) (aiproxy.Provider, string, bool) {
	prefix, rest, ok := strings.Cut(model, "/")
	if !ok || rest == "" || x.body == nil {
		return aiproxy.Provider{}, escaped, false
	}
	name, err := aiproxy.NormalizeHost(prefix)
	if err != nil {
		return aiproxy.Provider{}, escaped, false
	}
	prov, err := p.dir.Provider(ctx, name)
	if err != nil {
		return aiproxy.Provider{}, escaped, false
	}
	body, ok := openai.ReplaceModel(x.body, rest)
	if !ok {
		return aiproxy.Provider{}, escaped, false
	}
	x.body, x.model = body, aiproxy.Clip(rest, aiproxy.MaxModelLen)
	if tail, ok := strings.CutPrefix(escaped, "/v1"); ok && (tail == "" || tail[0] == '/') {
		root := prov.APIRoot
		if root == "" {
			root = aiproxy.DefaultAPIRoot
		}
		escaped = strings.TrimSuffix((&url.URL{Path: root}).EscapedPath(), "/") + tail
	}
	return prov, escaped, true
}

// modelsPath reports whether escaped is /v1/models (id "") or
// /v1/models/{id}.
func modelsPath(escaped string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(escaped, "/v1/models")
	switch {
	case !ok:
		return "", false
	case rest == "" || rest == "/":
		return "", true
	case rest[0] == '/':
		id, err := url.PathUnescape(rest[1:])
		return id, err == nil && id != ""
	}
	return "", false
}

// targetURL joins the provider's base URL and the client's escaped path,
// keeping the path as the client encoded it (an encoded "/" in a model id
// stays encoded), and the query without any user key. A path whose decoded
// form has a "." or ".." segment, or an encoded "?" or "#", is refused: it
// could leave the base URL's path or change what the upstream routes.
func targetURL(base, escaped, rawQuery string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EUPSTREAM, "provider base URL does not parse")
	}
	decoded, err := url.PathUnescape(escaped)
	if err != nil || strings.ContainsAny(decoded, "?#") || hasDotSegment(decoded) {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "the request path is not a plain API path")
	}
	base = strings.TrimSuffix(u.EscapedPath(), "/")
	u.Path = strings.TrimSuffix(u.Path, "/") + decoded
	u.RawPath = base + escaped
	if u.EscapedPath() != u.RawPath {
		u.RawPath = "" // the client's encoding was the canonical one
	}
	u.RawQuery = stripKeys(rawQuery)
	return u, nil
}

// hasDotSegment reports whether path has a "." or ".." segment.
func hasDotSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// stripKeys drops from a query every parameter that could carry a key: a
// key parameter, and any whose value holds a user key.
func stripKeys(q string) string {
	if q == "" {
		return q
	}
	var kept []string
	for part := range strings.SplitSeq(q, "&") {
		name, value, _ := strings.Cut(part, "=")
		name, _ = url.QueryUnescape(name)
		value, _ = url.QueryUnescape(value)
		if strings.EqualFold(name, "key") || strings.Contains(value, "sk-cfw") {
			continue
		}
		kept = append(kept, part)
	}
	return strings.Join(kept, "&")
}

// meteredSuffixes are the endpoints whose answers carry token usage.
var meteredSuffixes = []string{"/chat/completions", "/completions", "/responses", "/embeddings", "/messages"}

// metered reports whether a POST to path is a metered request.
func metered(path string) bool {
	path = strings.TrimRight(path, "/")
	for _, s := range meteredSuffixes {
		if strings.HasSuffix(path, s) {
			return true
		}
	}
	return false
}

// readBody reads a JSON body (a metered endpoint's whatever its
// Content-Type says) to learn the model and, for a streamed chat
// completion whose client did not ask for usage, to ask the upstream for
// it. A metered body that is not one unambiguous JSON object is refused:
// what aiproxy reads must be what the upstream reads. Any other body
// streams through unread, each read bounded by BodyTimeout.
func (p *Proxy) readBody(r *http.Request, x *exchange) (openai.RequestInfo, error) {
	if r.ContentLength > p.cfg.MaxBody {
		return openai.RequestInfo{}, p.tooLarge()
	}
	if r.Body == nil || r.Body == http.NoBody {
		return openai.RequestInfo{}, nil
	}
	body := &clientBody{r: http.MaxBytesReader(nil, r.Body, p.cfg.MaxBody), c: r.Body, rc: x.rc, timeout: p.cfg.BodyTimeout}
	if ct := r.Header.Get("Content-Type"); !x.metered && !isJSON(ct) {
		x.reqBody = body
		if model, ok := p.formModel(x, ct); ok {
			x.model = model
		}
		return openai.RequestInfo{}, nil
	}
	buf, err := io.ReadAll(body)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return openai.RequestInfo{}, p.tooLarge()
		}
		return openai.RequestInfo{}, aiproxy.Errorf(aiproxy.EINVALID, "could not read the request body")
	}
	body.done()
	x.body = buf
	info := openai.InspectRequest(buf)
	if x.metered && info.Problem != "" {
		return info, aiproxy.Errorf(aiproxy.EINVALID, "aiproxy cannot read the request body unambiguously: %s", info.Problem)
	}
	x.model = aiproxy.Clip(info.Model, aiproxy.MaxModelLen)
	x.streamed = info.Stream
	return info, nil
}

// formPeek is how much of a multipart body formModel reads ahead.
const formPeek = 16 << 10

// formModel reads the model of a multipart form (an audio transcription, an
// image edit) when its field comes before the file, from the first 16 KiB
// of the body; those bytes are then sent first, and the rest streams
// through as before, never held in memory.
func (p *Proxy) formModel(x *exchange, ct string) (string, bool) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return "", false
	}
	head := make([]byte, formPeek)
	n, err := io.ReadFull(x.reqBody, head) // each read under the body timeout
	head = head[:n]
	x.reqBody.r = io.MultiReader(bytes.NewReader(head), errReader{err}, x.reqBody.r)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		x.reqBody.r = bytes.NewReader(head) // the whole body
	} else if err != nil {
		return "", false
	}
	mr := multipart.NewReader(bytes.NewReader(head), params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil || part.FileName() != "" {
			return "", false
		}
		if part.FormName() == "model" {
			v, err := io.ReadAll(io.LimitReader(part, aiproxy.MaxModelLen+1))
			if err != nil {
				return "", false
			}
			return aiproxy.Clip(string(v), aiproxy.MaxModelLen), true
		}
	}
}

// errReader returns err once, or nothing when err is nil, so that a read
// error met while peeking reaches the transport in its place.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err == nil {
		return 0, io.EOF
	}
	return 0, e.err
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

// notForwarded are the client's headers that never go upstream (besides
// the hop-by-hop and X-Forwarded ones that ReverseProxy removes):
// aiproxy's own X-Host-Final; every header a user key may come in (the
// provider's key replaces it); Accept-Encoding, so that the transport asks
// for gzip only and every answer can be read; cookies and client-IP
// headers; and the OpenAI organization and project, which would let a
// user pick another part of the shared account.
var notForwarded = []string{
	"X-Host-Final", "Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key",
	"Accept-Encoding", "Cookie", "X-Real-Ip", "Cf-Connecting-Ip", "True-Client-Ip",
	"Openai-Organization", "Openai-Project", "Connection", "Upgrade", "Te",
}

// rewrite is ReverseProxy's Rewrite hook: the provider's URL and key, and
// the client's headers without those that must not go upstream.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	x := exchangeOf(pr.In)
	out := pr.Out
	out.URL, out.Host = x.target, ""
	h := out.Header
	for _, name := range notForwarded {
		delete(h, name)
	}
	for name, vv := range h {
		for _, v := range vv {
			if strings.Contains(v, "sk-cfw") {
				delete(h, name) // a user key, wherever the client put it
				break
			}
		}
	}
	x.prov.PinHeaders(h)
	// The provider's key goes in in poolTransport, once per key it tries.
	// The transport replays a request whose body it can get again, or
	// that has no body and an idempotent method or an Idempotency-Key
	// header, when a reused connection drops it. Once the upstream may
	// have the request, aiproxy never sends it twice (STR-5): no GetBody,
	// and a bodyless POST carries an empty body rather than none.
	out.GetBody = nil
	if out.Body == nil && !idempotent(out.Method) {
		out.Body = emptyBody{}
	}
}

// errEncoding refuses an answer whose encoding aiproxy cannot read.
var errEncoding = errors.New("the provider answered with a content encoding aiproxy does not read")

// modifyResponse is ReverseProxy's ModifyResponse hook: it wraps the
// answer's body to read usage, strip what aiproxy asked for, scrub the
// provider key and restart the idle timer, and cleans the headers.
func (p *Proxy) modifyResponse(res *http.Response) error {
	x := exchangeOf(res.Request)
	x.ttfb = p.now().Sub(x.start)
	x.status = res.StatusCode
	h := res.Header
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return errEncoding
	}
	for name := range h {
		if strings.HasPrefix(name, "Access-Control-") {
			delete(h, name) // the server's CORS headers replace the upstream's
		}
	}
	scrub.Header(h, x.key)
	if x.res != nil {
		// For a limited user, aiproxy's own x-ratelimit-* win (STR-5).
		for name := range h {
			if strings.HasPrefix(name, "X-Ratelimit-") {
				delete(h, name)
			}
		}
	}
	if up := h.Values("X-Request-Id"); len(up) > 0 {
		// aiproxy's own id stays; the upstream's comes back beside it
		// (STR-5), and the log line carries both.
		x.upID = aiproxy.Clip(up[0], 128)
		h["X-Upstream-Request-Id"] = up
		delete(h, "X-Request-Id")
	}

	body := &responseBody{x: x, res: res, idle: p.cfg.IdleTimeout, write: p.cfg.WriteTimeout}
	if isEventStream(h.Get("Content-Type")) {
		x.streamed, x.stream = true, true
		p.cfg.Metrics.StreamOpened()
		s := openai.NewStreamScanner(res.Body, x.strip)
		body.r, x.scanner = s, s
		if x.strip {
			h.Del("Content-Length")
			res.ContentLength = -1
		}
	} else {
		s := openai.NewBodyScanner(res.Body, 64<<10)
		body.r, x.scanner = s, s
	}
	body.r = scrub.NewReader(body.r, x.key)
	body.c = res.Body
	// The idle timer cancels a response whose upstream falls silent.
	x.idle = time.AfterFunc(p.cfg.IdleTimeout, x.cancel)
	res.Body = body
	return nil
}

// responseBody is the answer's body as ReverseProxy copies it: each read
// is followed by a write to the client, so a read restarts both the idle
// timer and the client's write deadline. (ReverseProxy flushes the headers
// of an event stream at once, and each event as it is written.)
type responseBody struct {
	x     *exchange
	res   *http.Response
	r     io.Reader
	c     io.Closer
	idle  time.Duration
	write time.Duration
}

func (b *responseBody) Read(p []byte) (int, error) {
	x := b.x
	n, err := b.r.Read(p)
	if n > 0 {
		x.idle.Reset(b.idle)
		_ = x.rc.SetWriteDeadline(time.Now().Add(b.write))
		x.bytes += int64(n)
	}
	switch {
	case err == io.EOF:
		x.eof = true
		for _, vv := range b.res.Trailer {
			for i, v := range vv {
				vv[i] = scrub.String(v, x.key)
			}
		}
	case err != nil && x.errMsg == "":
		x.errMsg = err.Error()
	}
	return n, err
}

func (b *responseBody) Close() error { return b.c.Close() }

// errorHandler is ReverseProxy's ErrorHandler: 504 when the upstream sent
// no headers in time, 413 for a body over the limit, 400 for a client body
// that broke off, nothing when the client left, 502 otherwise. The
// error's text (it holds URLs) goes only to the log.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r)
	x.errMsg = err.Error()
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		p.fail(w, r, x, p.tooLarge())
	case x.reqBody != nil && x.reqBody.failed():
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EINVALID, "could not read the request body"))
	case x.status == 0 && errors.Is(context.Cause(r.Context()), context.Canceled) && !errors.Is(err, errEncoding):
		// The client left, or shutdown ended the request: there is no
		// answer, and an empty 200 must not stand in for one.
		x.status = 499
		p.finish(r, x)
		panic(http.ErrAbortHandler)
	case errors.Is(err, errEncoding):
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EUPSTREAM, "%s", errEncoding.Error()))
	case errors.As(err, &oe) && oe.Op == "dial":
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EUPSTREAM, "could not connect to the provider"))
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() ||
		strings.Contains(err.Error(), "timeout awaiting response headers"):
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.ETIMEOUT, "the provider did not answer in time"))
	default:
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EUPSTREAM, "the provider could not be reached"))
	}
}

// clientBody is the client's request body: bounded by MaxBody, each read
// bounded by a read deadline, and remembering the error that ended it, so
// that a failed round trip can be blamed on the client (400) rather than
// the upstream (502). The transport reads it on its own goroutine.
type clientBody struct {
	r       io.Reader
	c       io.Closer
	rc      *http.ResponseController
	timeout time.Duration
	mu      sync.Mutex
	err     error
}

func (b *clientBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.r.Read(p)
	if err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *clientBody) Close() error { return b.c.Close() }

// done clears the read deadline once the body has been read.
func (b *clientBody) done() { _ = b.rc.SetReadDeadline(time.Time{}) }

// failed reports whether the body ended in an error of its own.
func (b *clientBody) failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil && b.err != io.EOF
}

// emptyBody is a body of no bytes that the transport cannot replay.
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

// idempotent reports whether the transport may replay method by itself.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// isJSON reports whether a request body may be a JSON document worth
// inspecting: SDKs send application/json, and `curl -d '{…}'` without a
// Content-Type sends application/x-www-form-urlencoded. Anything else
// (multipart audio uploads, …) streams through unread.
func isJSON(ct string) bool {
	switch ct {
	case "", "application/json", "application/json; charset=utf-8":
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		mt == "application/x-www-form-urlencoded")
}

func isEventStream(ct string) bool {
	switch ct {
	case "text/event-stream", "text/event-stream; charset=utf-8":
		return true
	case "application/json", "application/json; charset=utf-8":
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// bufferPool lends ReverseProxy its copy buffers: 8 KiB, held by an open
// stream for its whole life.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

func (p *Proxy) tooLarge() error {
	return aiproxy.Errorf(aiproxy.ETOOLARGE, "request body is larger than %d bytes", p.cfg.MaxBody)
}

// fail answers err as aiproxy's own OpenAI-shaped error. A request that is
// refused before its body was read gets its answer at once: the connection
// closes after it, rather than waiting for a body nobody will read.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	if aiproxy.ErrorCode(err) == aiproxy.EINTERNAL {
		x.errMsg = err.Error()
	}
	if x.body == nil && x.reqBody == nil && r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		w.Header().Set("Connection", "close")
		_ = x.rc.SetReadDeadline(time.Now())
	}
	if re := (*restingError)(nil); errors.As(err, &re) {
		w.Header().Set("Retry-After", retryAfter(re.wake))
		err = aiproxy.Errorf(aiproxy.ERATELIMITED, "%s; retry in %ss", re.Error(), retryAfter(re.wake))
	}
	x.failed = true
	x.status = httperr.Write(w, err).Status
}

// finish logs the request and queues its usage record.
func (p *Proxy) finish(r *http.Request, x *exchange) {
	if x.done {
		return
	}
	x.done = true
	if x.idle != nil {
		x.idle.Stop()
		// What net/http still has to write after the handler returns gets
		// one more write timeout.
		_ = x.rc.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout))
	}
	if x.scanner != nil {
		x.tokens = x.scanner.Usage()
		if x.tokens.Model != "" {
			x.model = aiproxy.Clip(x.tokens.Model, aiproxy.MaxModelLen)
		}
	}
	dur := p.now().Sub(x.start)
	// A forwarded request whose answer did not reach its end: the upstream
	// broke off, went silent, or the client left.
	partial := x.recorded && !x.eof && !x.failed
	if x.stream {
		p.cfg.Metrics.StreamClosed()
	}
	var cost *float64
	if x.price != nil && x.tokens.PromptTokens != nil {
		c := x.price.Cost(*x.tokens.PromptTokens, deref(x.tokens.CachedTokens), deref(x.tokens.CompletionTokens))
		cost = &c
	}
	// An upstream error status, or aiproxy's own refusal, gives the
	// reservation back; anything else is charged its usage, or the
	// reservation when the usage could not be read (budgets fail closed).
	var charged aiproxy.Charged
	if x.failed || x.status >= 400 || !x.recorded {
		x.res.Release()
	} else {
		charged = x.res.Settle(x.tokens.PromptTokens, x.tokens.CompletionTokens, x.tokens.CachedTokens, cost)
	}
	p.logExchange(r, x, dur, partial)
	p.cfg.Metrics.RequestDone(metrics.Request{
		Provider: x.provider, Route: routeKind(x.path), Status: x.status, Duration: dur, TTFB: x.ttfb,
		Model: x.model, User: x.user.Name, PromptTokens: x.tokens.PromptTokens,
		CompletionTokens: x.tokens.CompletionTokens, CostUSD: cost,
	})
	if !x.recorded || p.rec == nil {
		return
	}
	p.rec.Record(aiproxy.Usage{
		Time:             x.start,
		UserID:           x.user.ID,
		UserName:         x.user.Name,
		Provider:         x.provider,
		Model:            x.model,
		Path:             x.path,
		Status:           x.status,
		PromptTokens:     x.tokens.PromptTokens,
		CompletionTokens: x.tokens.CompletionTokens,
		TotalTokens:      x.tokens.TotalTokens,
		ReasoningTokens:  x.tokens.ReasoningTokens,
		CachedTokens:     x.tokens.CachedTokens,
		Duration:         dur,
		TTFB:             x.ttfb,
		Streamed:         x.streamed,
		Partial:          partial,
		CostUSD:          cost,
		ChargedTokens:    charged.Tokens,
		ChargedMicroUSD:  charged.MicroUSD,
		Unmetered:        x.metered && x.status < 400 && x.tokens.TotalTokens == nil && x.tokens.PromptTokens == nil,
	})
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// routeKind is the metrics' route label of a path.
func routeKind(path string) string {
	path = strings.TrimRight(path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"), strings.HasSuffix(path, "/completions"):
		return "chat"
	case strings.HasSuffix(path, "/responses"):
		return "responses"
	case strings.HasSuffix(path, "/embeddings"):
		return "embeddings"
	case strings.HasSuffix(path, "/messages"):
		return "messages"
	case strings.Contains(path, "/models"):
		return "models"
	}
	return "other"
}

// logExchange writes the request's log line.
func (p *Proxy) logExchange(r *http.Request, x *exchange, dur time.Duration, partial bool) {
	var a [16]slog.Attr // room for every attribute: no allocation
	attrs := append(a[:0],
		slog.String("request_id", x.id),
		slog.String("method", r.Method),
		slog.String("path", x.path),
		slog.String("user", x.user.Name),
		slog.String("provider", x.provider),
		slog.String("model", x.model),
		slog.Int("status", x.status),
		slog.Float64("dur_ms", float64(dur.Microseconds())/1000),
		slog.Int64("bytes", x.bytes),
		slog.Bool("streamed", x.streamed),
	)
	if partial {
		attrs = append(attrs, slog.Bool("partial", true))
	}
	if x.upID != "" {
		attrs = append(attrs, slog.String("upstream_request_id", x.upID))
	}
	if t := x.tokens.PromptTokens; t != nil {
		attrs = append(attrs, slog.Int64("prompt_tokens", *t))
	}
	if t := x.tokens.CompletionTokens; t != nil {
		attrs = append(attrs, slog.Int64("completion_tokens", *t))
	}
	if x.errMsg != "" {
		attrs = append(attrs, slog.String("err", aiproxy.Clip(x.errMsg, aiproxy.MaxPathLen)))
	}
	level := slog.LevelInfo
	if x.status >= 500 || x.errMsg != "" {
		level = slog.LevelWarn
	}
	p.log.LogAttrs(r.Context(), level, "proxy", attrs...)
}
