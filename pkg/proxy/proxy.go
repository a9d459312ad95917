// Package proxy is aiproxy's streaming reverse proxy: it authenticates a
// user key, picks one of the provider's stored keys, and forwards the
// request to the provider's base URL, streaming the answer back as it
// arrives and recording usage off the request path.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/openai"
	"github.com/aiproxy/aiproxy/pkg/upstream"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

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
	// DenyPrivate refuses, at dial time, upstreams whose address is
	// loopback, private, link-local, unspecified or multicast (SSRF-3).
	// Off by default: local model servers are a main use.
	DenyPrivate bool
	// Transport, when set, replaces the default upstream transport.
	Transport http.RoundTripper
}

// Proxy forwards authenticated requests to registered providers.
type Proxy struct {
	svc       *admin.Service
	rec       *usage.Recorder
	log       *slog.Logger
	cfg       Config
	transport http.RoundTripper
	next      atomic.Uint64 // round-robin over a provider's keys
	now       func() time.Time
}

// New returns a Proxy. rec may be nil, in which case usage is not recorded.
func New(svc *admin.Service, rec *usage.Recorder, log *slog.Logger, cfg Config) *Proxy {
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
	if cfg.DefaultProvider == "" {
		cfg.DefaultProvider = "api.openai.com"
	}
	p := &Proxy{svc: svc, rec: rec, log: log, cfg: cfg, transport: cfg.Transport, now: time.Now}
	if p.transport == nil {
		p.transport = NewTransport(cfg)
	}
	return p
}

// NewTransport returns the pooled upstream transport: plain-HTTP providers
// through upstream.Transport (no goroutine per connection), everything
// else (HTTPS, over HTTP/2 where the provider offers it, and requests sent
// through an HTTP proxy from the environment) through net/http. Both keep
// up to 100 idle connections per host and bound the dial, TLS and header
// waits, with no total deadline.
func NewTransport(cfg Config) *upstream.Transport {
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if cfg.DenyPrivate {
		d.Control = denyPrivate
	}
	fallback := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout: cfg.HeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// 2 KiB instead of 4 KiB each, held per upstream connection (per
		// open stream): a request's header block and a small body still go
		// in one write, and larger bodies and responses bypass the buffers.
		WriteBufferSize: 2 << 10,
		ReadBufferSize:  2 << 10,
	}
	return &upstream.Transport{
		Dial:           d.DialContext,
		Fallback:       fallback,
		Proxy:          http.ProxyFromEnvironment,
		HeaderTimeout:  cfg.HeaderTimeout,
		IdleTimeout:    90 * time.Second,
		MaxIdlePerHost: 100,
		ReadBufferSize: 2 << 10,
	}
}

// errPrivate is the dial error for a refused private address.
var errPrivate = errors.New("upstream address is private or loopback and --deny-private-upstreams is set")

// denyPrivate runs after name resolution, on the address actually dialled,
// so DNS rebinding cannot get around it.
func denyPrivate(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return errPrivate
	}
	return nil
}

// CloseIdle closes idle upstream connections.
func (p *Proxy) CloseIdle() {
	if t, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// Error codes and types of the OpenAI error body.
const (
	typeInvalid = "invalid_request_error"
	typeAuth    = "authentication_error"
	typeAPI     = "api_error"
)

// Route says where a proxied request goes: Host is the provider named by
// the path or X-Host-Final ("" for header or default), Path the path to
// append to its base URL.
type Route struct {
	Host string
	Path string
}

// exchange is the state of one proxied request, used for its usage record
// and its log line.
type exchange struct {
	start    time.Time
	user     aiproxy.User
	provider string
	model    string
	path     string
	status   int
	ttfb     time.Duration
	streamed bool
	partial  bool
	bytes    int64
	tokens   openai.Usage
	body     *clientBody // a streamed (not inspected) request body
	recorded bool        // a user was authenticated: the request is recorded
	done     bool        // finish has run
	errMsg   string
}

// Serve proxies r along route.
//
// Serve and roundTrip keep their own stack frames small, and do the work
// with large frames (checks, header copies, the log line) in functions that
// return before the response is written: a stream's goroutine keeps the
// stack that the deepest call made it grow to for the stream's whole life,
// and writing the response headers is deep. With the checks inline it
// crossed 8 KiB there, and every open stream held a 16 KiB stack.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, route Route) {
	x := &exchange{start: p.now(), path: r.URL.Path}
	defer p.finish(r, x)
	// The upstream request runs under ctx: the client's, which ends when
	// it leaves, and cancel, which the idle timer calls.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	out, key, strip, ok := p.prepare(ctx, w, r, x, route)
	if !ok {
		return
	}
	p.roundTrip(w, r, out, x, key, strip, cancel)
}

// prepare checks the request (provider, key) and builds the upstream
// request, or answers the error itself and reports false.
func (p *Proxy) prepare(ctx context.Context, w http.ResponseWriter, r *http.Request, x *exchange, route Route) (out *http.Request, key string, strip, ok bool) {
	host := route.Host
	if host == "" {
		hv := r.Header.Values("X-Host-Final")
		switch len(hv) {
		case 0:
			host = p.cfg.DefaultProvider
		case 1:
			host = hv[0]
		default:
			p.fail(w, x, http.StatusBadRequest, "invalid_request", typeInvalid, "X-Host-Final must be given once")
			return nil, "", false, false
		}
	}
	norm, err := aiproxy.NormalizeHost(host)
	if err != nil {
		p.fail(w, x, http.StatusBadRequest, "invalid_request", typeInvalid,
			"X-Host-Final must be a bare host[:port] of a registered provider")
		return nil, "", false, false
	}
	x.provider = norm

	user, err := p.authenticate(r)
	if err != nil {
		code := "invalid_api_key"
		if aiproxy.ErrorCode(err) == aiproxy.EEXPIRED {
			code = "key_expired"
		}
		if c := aiproxy.ErrorCode(err); c != aiproxy.EUNAUTHORIZED && c != aiproxy.EEXPIRED {
			p.internal(w, x, err)
			return nil, "", false, false
		}
		p.fail(w, x, http.StatusUnauthorized, code, typeAuth, aiproxy.ErrorMessage(err))
		return nil, "", false, false
	}
	x.user, x.recorded = user, true

	prov, err := p.provider(r.Context(), norm)
	if err != nil {
		if aiproxy.ErrorCode(err) == aiproxy.ENOTFOUND {
			p.fail(w, x, http.StatusNotFound, "unknown_provider", typeInvalid,
				"provider "+strconv.Quote(norm)+" is not registered on this proxy")
			return nil, "", false, false
		}
		p.internal(w, x, err)
		return nil, "", false, false
	}
	if len(prov.Keys) == 0 {
		p.fail(w, x, http.StatusBadGateway, "upstream_unreachable", typeAPI, "provider "+norm+" has no key")
		return nil, "", false, false
	}

	return p.outgoing(ctx, w, r, x, route, prov)
}

// authenticate checks the Authorization header: exactly one, "Bearer KEY".
func (p *Proxy) authenticate(r *http.Request) (aiproxy.User, error) {
	hv := r.Header.Values("Authorization")
	if len(hv) != 1 {
		return aiproxy.User{}, aiproxy.InvalidKey()
	}
	key, ok := bearer(hv[0])
	if !ok {
		return aiproxy.User{}, aiproxy.InvalidKey()
	}
	u, err := p.svc.Authenticate(r.Context(), key)
	if aiproxy.ErrorCode(err) == aiproxy.EUNAUTHORIZED {
		// One answer for every refused key, whatever the reason.
		return u, aiproxy.InvalidKey()
	}
	return u, err
}

// Bearer returns the token of an "Authorization: Bearer TOKEN" value.
func bearer(v string) (string, bool) {
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(v[len(prefix):]), true
}

// Bearer is exported for the server's /me and /admin routes.
func Bearer(r *http.Request) (string, bool) {
	hv := r.Header.Values("Authorization")
	if len(hv) != 1 {
		return "", false
	}
	return bearer(hv[0])
}

func (p *Proxy) provider(ctx context.Context, host string) (aiproxy.Provider, error) {
	prov, err := p.svc.Provider(ctx, host)
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

// hopHeaders are removed in both directions (RFC 9110 section 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// notForwarded are the client's headers that never go upstream: the
// hop-by-hop ones, aiproxy's own X-Host-Final, Accept-Encoding (so that
// usage can be read), cookies and client-IP headers. (Authorization is
// replaced.)
var notForwarded = map[string]bool{
	"X-Host-Final": true, "Accept-Encoding": true, "Forwarded": true, "X-Forwarded-For": true,
	"X-Forwarded-Host": true, "X-Forwarded-Proto": true, "X-Real-Ip": true, "Cf-Connecting-Ip": true,
	"True-Client-Ip": true, "Cookie": true,
}

func init() {
	for _, h := range hopHeaders {
		notForwarded[h] = true
	}
}

// outgoingHeader is in.Clone() without notForwarded and the headers that
// in's Connection header names, in one pass and two allocations.
func outgoingHeader(in http.Header) http.Header {
	var named []string
	for _, f := range in["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				named = append(named, http.CanonicalHeaderKey(name))
			}
		}
	}
	nv := 0
	for _, vv := range in {
		nv += len(vv)
	}
	sv := make([]string, nv)
	out := make(http.Header, len(in))
	for k, vv := range in {
		if notForwarded[k] || slices.Contains(named, k) {
			continue
		}
		if vv == nil {
			out[k] = nil // as Clone keeps it
			continue
		}
		n := copy(sv, vv)
		out[k] = sv[:n:n]
		sv = sv[n:]
	}
	return out
}

// outgoing builds the upstream request: the provider's URL, its key, the
// client's headers without hop-by-hop ones, X-Host-Final, the client's key,
// Accept-Encoding (so usage can be read) or client-IP headers. It reads a
// JSON body (bounded by MaxBody) to learn the model and, for a streamed chat
// completion whose client did not ask for usage, to ask the upstream for it.
func (p *Proxy) outgoing(ctx context.Context, w http.ResponseWriter, r *http.Request, x *exchange, route Route, prov aiproxy.Provider) (out *http.Request, key string, strip, ok bool) {
	if r.ContentLength > p.cfg.MaxBody {
		p.tooLarge(w, x)
		return nil, "", false, false
	}
	target := prov.BaseURL + routePath(r, route)
	if q := r.URL.RawQuery; q != "" {
		target += "?" + q
	}
	body := r.Body
	length := r.ContentLength
	if r.Body != nil && r.Body != http.NoBody && isJSON(r.Header.Get("Content-Type")) {
		buf, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.cfg.MaxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				p.tooLarge(w, x)
			} else {
				p.fail(w, x, http.StatusBadRequest, "invalid_request", typeInvalid, "could not read the request body")
			}
			return nil, "", false, false
		}
		info := openai.InspectRequest(buf)
		x.model = info.Model
		x.streamed = info.Stream
		if info.Stream && !info.IncludeUsage && prov.InjectUsage && chatCompletions(route.Path, r.URL.Path) {
			if nb, ok := openai.InjectIncludeUsage(buf); ok {
				buf, strip = nb, true
			}
		}
		body, length = upstream.BytesBody(buf), int64(len(buf))
	} else if r.Body != nil && r.Body != http.NoBody {
		x.body = &clientBody{ReadCloser: http.MaxBytesReader(w, r.Body, p.cfg.MaxBody)}
		body = x.body
		// Let the upstream answer while the client is still sending.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, target, body)
	if err != nil {
		p.internal(w, x, err)
		return nil, "", false, false
	}
	// The transport replays a request whose body it can get again (GetBody),
	// or that has no body and an idempotent method or an Idempotency-Key
	// header, when a reused connection drops it. Once the upstream may
	// have the request, aiproxy never sends it twice (STR-5): no GetBody,
	// and a bodyless POST carries an empty body rather than NoBody.
	out.GetBody = nil
	if body == nil || body == http.NoBody {
		out.Body = http.NoBody
		if !idempotent(r.Method) {
			out.Body = upstream.BytesBody(nil)
		}
	}
	out.ContentLength = length
	out.Header = outgoingHeader(r.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // Go would add its own
	}
	key = p.pickKey(prov)
	out.Header.Set("Authorization", "Bearer "+key)
	return out, key, strip, true
}

// pickKey spreads requests over the provider's keys in turn.
func (p *Proxy) pickKey(prov aiproxy.Provider) string {
	return prov.Keys[int(p.next.Add(1)%uint64(len(prov.Keys)))]
}

// chatCompletions reports whether a+b ends in /chat/completions, without
// concatenating them.
func chatCompletions(a, b string) bool {
	const suffix = "/chat/completions"
	if len(b) >= len(suffix) {
		return strings.HasSuffix(b, suffix)
	}
	return len(a)+len(b) >= len(suffix) && strings.HasSuffix(a, suffix[:len(suffix)-len(b)]) && suffix[len(suffix)-len(b):] == b
}

// routePath is the path appended to the base URL: the request path for
// /v1/… and /openai/…, the rest after /{host} for a host-named route.
func routePath(r *http.Request, route Route) string {
	if route.Path != "" {
		return route.Path
	}
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// isJSON reports whether a request body may be a JSON document worth
// inspecting: SDKs send application/json, and `curl -d '{…}'` without a
// Content-Type sends application/x-www-form-urlencoded. Anything else
// (multipart audio uploads, …) streams through unread.
func isJSON(ct string) bool {
	switch ct {
	case "", "application/json", "application/json; charset=utf-8":
		return true // the values SDKs send, without ParseMediaType's map
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		mt == "application/x-www-form-urlencoded")
}

// bufPool holds the copy buffers of response bodies; smallBufPool those
// of event streams until they need more.
var (
	bufPool      = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
	smallBufPool = sync.Pool{New: func() any { b := make([]byte, 2<<10); return &b }}
)

// roundTrip sends out and streams the answer to w as it arrives.
func (p *Proxy) roundTrip(w http.ResponseWriter, r *http.Request, out *http.Request, x *exchange, key string, strip bool, cancel context.CancelFunc) {
	res, err := p.transport.RoundTrip(out)
	if err != nil {
		p.upstreamError(w, r, x, err)
		return
	}
	defer res.Body.Close()
	x.ttfb = p.now().Sub(x.start)
	x.status = res.StatusCode

	// The idle timer cancels a response whose upstream falls silent.
	idle := time.AfterFunc(p.cfg.IdleTimeout, cancel)
	defer idle.Stop()

	sse := isEventStream(res.Header.Get("Content-Type"))
	var body io.Reader
	var scanned interface{ Usage() openai.Usage }
	if sse {
		x.streamed = true
		s := openai.NewStreamScanner(res.Body, strip)
		body, scanned = s, s
		if strip {
			res.Header.Del("Content-Length")
			res.ContentLength = -1
		}
	} else {
		s := openai.NewBodyScanner(res.Body, 4<<20)
		body, scanned = s, s
	}
	if res.StatusCode >= 400 {
		body = scrub(body, key)
		scrubHeader(res.Header, key)
	}

	copyHeader(w.Header(), res)
	w.WriteHeader(res.StatusCode)

	flush := sse || res.ContentLength < 0
	rc := http.NewResponseController(w)
	if flush && !upstream.Ready(res.Body) {
		// The client learns the status at once, not with the first event,
		// which may be a long time-to-first-token away. When the first
		// bytes are already here, they carry the headers: one write and
		// one wake-up of the client fewer before the first event.
		_ = rc.Flush()
	}
	readErr := p.copyBody(w, rc, body, x, idle, sse, flush)
	x.tokens = scanned.Usage()
	if x.tokens.Model != "" {
		x.model = x.tokens.Model
	}
	if readErr != nil {
		// The upstream broke off, the client left, or the server is
		// shutting down past its grace period: abort the client's
		// response, so that it is never taken for complete.
		x.partial = true
		if r.Context().Err() == nil {
			x.errMsg = readErr.Error()
		}
		p.finish(r, x)
		panic(http.ErrAbortHandler)
	}
	copyTrailer(w.Header(), res)
	if !flush {
		// A body of known length is complete: send it now rather than
		// after the log line and the usage record, when the handler
		// returns.
		_ = rc.Flush()
	}
}

// copyHeader copies the upstream's response headers to h, except the
// hop-by-hop and CORS ones, and announces its trailers.
func copyHeader(h http.Header, res *http.Response) {
	for k, vv := range res.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			continue // the server's CORS headers replace the upstream's
		}
		h[k] = vv
	}
	removeHopHeaders(h)
	if len(res.Trailer) > 0 {
		names := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			names = append(names, k)
		}
		h.Set("Trailer", strings.Join(names, ", "))
	}
}

// copyTrailer sends the upstream's trailers, once its body has ended.
func copyTrailer(h http.Header, res *http.Response) {
	for k, vv := range res.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// copyBody copies body to w as it arrives, flushing each write when flush
// is set, and restarts the idle timer at every read. It returns the
// upstream's read error (nil at its clean end); a client that went away
// only marks the exchange partial.
func (p *Proxy) copyBody(w http.ResponseWriter, rc *http.ResponseController, body io.Reader, x *exchange, idle *time.Timer, sse, flush bool) error {
	// An event stream starts with a small buffer: most of its life is spent
	// waiting for the next small event, with the buffer held. A read that
	// fills it moves the rest of the stream to the large one.
	pool := &bufPool
	if sse {
		pool = &smallBufPool
	}
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			idle.Reset(p.cfg.IdleTimeout)
			if _, werr := w.Write(buf[:n]); werr != nil {
				x.partial = true // the client went away
				break
			}
			x.bytes += int64(n)
			if flush {
				if ferr := rc.Flush(); ferr != nil {
					x.partial = true
					break
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if n == len(buf) && pool == &smallBufPool {
			pool.Put(bp)
			pool = &bufPool
			bp = pool.Get().(*[]byte)
			buf = *bp
		}
	}
	return nil
}

// scrub masks the provider key wherever an upstream error body echoes it
// (KEY-5), keeping the length so Content-Length stays right. Error bodies
// are small; only their first MiB is searched.
func scrub(body io.Reader, key string) io.Reader {
	head, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if k := []byte(key); len(k) >= 8 && bytes.Contains(head, k) {
		head = bytes.ReplaceAll(head, k, []byte(mask(key)))
	}
	if err != nil {
		return io.MultiReader(bytes.NewReader(head), errReader{err})
	}
	return io.MultiReader(bytes.NewReader(head), body)
}

// scrubHeader masks the provider key in the header values of an error
// answer (a WWW-Authenticate that names it, say).
func scrubHeader(h http.Header, key string) {
	if len(key) < 8 {
		return
	}
	for name, vv := range h {
		for i, v := range vv {
			if strings.Contains(v, key) {
				vv[i] = strings.ReplaceAll(v, key, mask(key))
			}
		}
		h[name] = vv
	}
}

// mask keeps a key's first three and last four characters: the length and
// hint stay, the secret goes.
func mask(key string) string {
	m := []byte(strings.Repeat("*", len(key)))
	copy(m, key[:3])
	copy(m[len(m)-4:], key[len(key)-4:])
	return string(m)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func isEventStream(ct string) bool {
	switch ct {
	case "text/event-stream", "text/event-stream; charset=utf-8":
		return true // the values providers send, without ParseMediaType's map
	case "application/json", "application/json; charset=utf-8":
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// upstreamError answers a failed round trip: 504 when the upstream sent
// no headers in time, 413 for a body over the limit, nothing when the
// client left, 502 otherwise. The error's text (it holds URLs) goes only
// to the log.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	x.errMsg = err.Error()
	var mbe *http.MaxBytesError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &mbe):
		p.tooLarge(w, x)
	case x.body != nil && x.body.failed():
		// The client's own body was malformed (bad chunking) or broke off.
		p.fail(w, x, http.StatusBadRequest, "invalid_request", typeInvalid, "could not read the request body")
	case r.Context().Err() != nil:
		// The client left, or shutdown ended the request: there is no
		// answer, and an empty 200 must not stand in for one.
		x.status, x.partial = 499, true
		p.finish(r, x)
		panic(http.ErrAbortHandler)
	case errors.As(err, &oe) && oe.Op == "dial":
		p.fail(w, x, http.StatusBadGateway, "upstream_unreachable", typeAPI, "could not connect to the provider")
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		p.fail(w, x, http.StatusGatewayTimeout, "upstream_timeout", typeAPI, "the provider did not answer in time")
	default:
		p.fail(w, x, http.StatusBadGateway, "upstream_unreachable", typeAPI, "the provider could not be reached")
	}
}

// clientBody remembers the error that ended a streamed request body, so a
// failed round trip can be blamed on the client (400) rather than the
// upstream (502). The transport's body writer sets it while the round trip
// may already be failing on the handler's goroutine.
type clientBody struct {
	io.ReadCloser
	mu  sync.Mutex
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// failed reports whether the body ended in an error of its own.
func (b *clientBody) failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil && b.err != io.EOF
}

// idempotent reports whether the transport may replay method by itself.
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

func (p *Proxy) tooLarge(w http.ResponseWriter, x *exchange) {
	p.fail(w, x, http.StatusRequestEntityTooLarge, "request_too_large", typeInvalid,
		"request body is larger than "+strconv.FormatInt(p.cfg.MaxBody, 10)+" bytes")
}

func (p *Proxy) internal(w http.ResponseWriter, x *exchange, err error) {
	x.errMsg = err.Error()
	p.fail(w, x, http.StatusInternalServerError, "internal_error", typeAPI, "internal error")
}

// fail writes an OpenAI-shaped error answered by aiproxy itself.
func (p *Proxy) fail(w http.ResponseWriter, x *exchange, status int, code, typ, msg string) {
	x.status = status
	openai.WriteError(w, status, code, typ, msg)
}

// finish logs the request and queues its usage record.
func (p *Proxy) finish(r *http.Request, x *exchange) {
	if x.done {
		return
	}
	x.done = true
	dur := p.now().Sub(x.start)
	p.logExchange(r, x, dur)
	if !x.recorded || p.rec == nil {
		return
	}
	p.record(x, dur)
}

// logExchange writes the request's log line.
func (p *Proxy) logExchange(r *http.Request, x *exchange, dur time.Duration) {
	var a [13]slog.Attr // room for every attribute: no allocation
	attrs := append(a[:0],
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
	if x.partial {
		attrs = append(attrs, slog.Bool("partial", true))
	}
	if t := x.tokens.PromptTokens; t != nil {
		attrs = append(attrs, slog.Int64("prompt_tokens", *t))
	}
	if t := x.tokens.CompletionTokens; t != nil {
		attrs = append(attrs, slog.Int64("completion_tokens", *t))
	}
	if x.errMsg != "" {
		attrs = append(attrs, slog.String("err", x.errMsg))
	}
	level := slog.LevelInfo
	if x.status >= 500 || x.errMsg != "" {
		level = slog.LevelWarn
	}
	p.log.LogAttrs(r.Context(), level, "proxy", attrs...)
}

// record queues the request's usage record.
func (p *Proxy) record(x *exchange, dur time.Duration) {
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
		Partial:          x.partial,
	})
}
