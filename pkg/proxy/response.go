package proxy

// The response side: ReverseProxy's ModifyResponse and ErrorHandler hooks,
// and the errors aiproxy answers itself.

import (
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/httperr"
	"github.com/aiproxy/aiproxy/pkg/openai"
	"github.com/aiproxy/aiproxy/pkg/scrub"
)

// statusClientLeft is the status recorded for a request whose client left
// before the answer began (nginx's 499).
const statusClientLeft = 499

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
		x.status = statusClientLeft
		p.finish(r, x)
		panic(http.ErrAbortHandler)
	case errors.Is(err, errEncoding):
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EUPSTREAM, "%s", errEncoding.Error()))
	case errors.As(err, &oe) && oe.Op == "dial":
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EUPSTREAM, "could not connect to the provider"))
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.ETIMEOUT, "the provider did not answer in time"))
	default:
		p.fail(w, r, x, aiproxy.Errorf(aiproxy.EUPSTREAM, "the provider could not be reached"))
	}
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

// bufferPool lends ReverseProxy its copy buffers: 4 KiB, held by an open
// stream for its whole life (the scrubber masks in it and holds only the
// start of a key): events are small, and a large body takes a few more
// reads.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

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
