package proxy

// The request side: where a request goes, what of it goes upstream, and
// how its body is read.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/openai"
)

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
	body, ok := x.req.ReplaceModel(rest)
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
	body := newClientBody(r.Body, p.cfg.MaxBody, x.rc, p.cfg.BodyTimeout)
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
	x.body = buf
	x.req = openai.Inspect(buf)
	info := x.req.RequestInfo
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
	x.reqBody.err = nil // what ended the peek is replayed after head
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

// clientBody is the client's request body: bounded by MaxBody, each read
// bounded by a read deadline, and remembering the error that ended it, so
// that a failed round trip can be blamed on the client (400) rather than
// the upstream (502). The transport reads it on its own goroutine.
type clientBody struct {
	r       io.Reader // what is sent: the body (a peeked start first, see formModel)
	c       io.Closer
	rc      *http.ResponseController
	timeout time.Duration
	drained bool // the client's body has ended: the read deadline is net/http's again
	mu      sync.Mutex
	err     error
}

func newClientBody(body io.ReadCloser, limit int64, rc *http.ResponseController, timeout time.Duration) *clientBody {
	b := &clientBody{c: body, rc: rc, timeout: timeout}
	b.r = http.MaxBytesReader(nil, io.NopCloser(endWatch{body, b}), limit)
	return b
}

func (b *clientBody) Read(p []byte) (int, error) {
	if !b.drained {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
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

// endWatch notes the end of the client's body and clears the read
// deadline then: net/http reads ahead on the connection from there on (for
// the next request, or to see the client leave), and a deadline left over
// would end the request as if the client had gone.
type endWatch struct {
	r io.Reader
	b *clientBody
}

func (e endWatch) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF && !e.b.drained {
		e.b.drained = true
		_ = e.b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *clientBody) Close() error { return b.c.Close() }

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
