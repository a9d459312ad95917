// Package upstream is aiproxy's HTTP/1.1 client for plain-HTTP providers
// (local model servers, and the benchmark's mock): an http.RoundTripper
// that runs each exchange on the caller's goroutine.
//
// net/http's Transport keeps two goroutines per connection (a read loop and
// a write loop) and two buffers, for as long as the connection lives; with
// the server's own goroutines that made four stacks per open stream. Here a
// request is written by the goroutine that calls RoundTrip and its answer
// read by the one that reads the body, so an open stream costs one
// connection, one 2 KiB read buffer and no goroutine of its own. Only a
// request body that is still arriving from the client gets a goroutine, for
// as long as it is being sent, so that the upstream can answer before it
// ends.
//
// Responses are parsed by http.ReadResponse (status line, headers, framing:
// chunked, Content-Length or close-delimited, trailers, HEAD, 1xx), so
// framing is net/http's. Requests are never retried: a request that failed
// on a connection may have reached the upstream.
//
// Requests for other schemes, and requests that Proxy sends through an
// HTTP proxy, go to Fallback: HTTPS providers are served over HTTP/2 by
// net/http, which multiplexes many streams on one connection.
package upstream

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Transport is an HTTP/1.1 client for http:// URLs. Its zero value is not
// usable: set Dial and Fallback.
type Transport struct {
	// Dial opens a connection to addr ("host:port").
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Fallback serves requests this transport does not: other schemes,
	// and those Proxy names an HTTP proxy for.
	Fallback http.RoundTripper
	// Proxy, when set, is asked for every request, as http.Transport asks
	// it; a request it names a proxy for goes to Fallback.
	Proxy func(*http.Request) (*url.URL, error)
	// HeaderTimeout bounds the wait for the response headers once the
	// request is written; 0 means no limit.
	HeaderTimeout time.Duration
	// IdleTimeout is how long an unused connection is kept (default 90 s;
	// swept every 5 s, when connections the upstream closed are closed
	// too); MaxIdlePerHost how many are kept per host (default 100).
	IdleTimeout    time.Duration
	MaxIdlePerHost int
	// ReadBufferSize is the size of each connection's read buffer (default
	// 2 KiB): held for as long as a stream is open.
	ReadBufferSize int

	mu      sync.Mutex
	idle    map[string][]*conn
	reaper  *time.Timer // sweeps the idle connections while there are any
	reaping bool        // reaper is armed
}

// conn is one upstream connection.
type conn struct {
	nc     net.Conn
	lr     limitReader   // what br reads: nc, bounded while headers are read
	br     *bufio.Reader // nil while idle
	key    string
	idleAt time.Time
	broken bool // a write failed: never reused
}

// MaxHeaderBytes bounds the response headers (with any 1xx before them):
// an upstream that sends more is cut off.
const MaxHeaderBytes = 1 << 20

var errHeaderTooLarge = errors.New("upstream: response headers larger than 1 MiB")

// limitReader reads from a connection, at most n bytes while limited.
type limitReader struct {
	nc      net.Conn
	n       int
	limited bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if !l.limited {
		return l.nc.Read(p)
	}
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.nc.Read(p)
	l.n -= n
	return n, err
}

// RoundTrip sends req and returns the response headers; the body is read
// from the connection as the caller reads it. The connection goes back to
// the pool when the body was read to its end, and is closed when the body
// is closed before that or req's context ends.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return t.Fallback.RoundTrip(req)
	}
	if t.Proxy != nil {
		if u, err := t.Proxy(req); err != nil || u != nil {
			return t.Fallback.RoundTrip(req)
		}
	}
	if req.URL.Host == "" {
		closeBody(req)
		return nil, errors.New("upstream: request has no host")
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err
	}
	key := hostPort(req.URL)
	c, err := t.get(ctx, key)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	// Once ctx ends, the connection is closed: a write or read blocked on
	// it returns at once.
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	res, w, err := t.exchange(c, req)
	if err != nil {
		stop()
		c.nc.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		if w != nil {
			select {
			case werr := <-w:
				var be bodyError
				if errors.As(werr, &be) {
					err = be.err // the client's body failed: that is the cause
				}
			default: // still reading the client's body: ends with the request
			}
		}
		return nil, err
	}
	b := &body{t: t, c: c, req: req, res: res, stop: stop, writing: w, ctx: ctx}
	if res.Body == http.NoBody {
		b.finish(true)
		return res, nil
	}
	b.rc = res.Body
	res.Body = b
	if res.Uncompressed {
		// Asked for by this transport, so decoded by it, as net/http does.
		res.Body = &gzipBody{body: b}
		res.Header.Del("Content-Encoding")
		res.Header.Del("Content-Length")
		res.ContentLength = -1
	}
	return res, nil
}

// exchange writes req on c and reads the response headers. A body that is
// not in memory is written by a goroutine whose result arrives on w.
func (t *Transport) exchange(c *conn, req *http.Request) (res *http.Response, w chan error, err error) {
	head, gz, err := requestHead(req)
	if err != nil {
		closeBody(req)
		return nil, nil, err
	}
	var werr error // the in-memory body's write error
	if data, ok := inMemory(req); ok {
		bufs := net.Buffers{head, data}
		_, werr = bufs.WriteTo(c.nc)
		putHead(head)
		if werr != nil {
			// An upstream may answer before it has read a large body (401,
			// 413) and close: its answer is then waiting to be read, and
			// is the one to pass on. The connection is done either way.
			c.broken = true
			c.nc.SetReadDeadline(time.Now().Add(earlyAnswerWait))
		} else {
			t.startHeaderTimer(c)
		}
	} else {
		_, err = c.nc.Write(head)
		putHead(head)
		if err != nil {
			closeBody(req)
			return nil, nil, err
		}
		// The header timer starts when the body is sent, unless the
		// answer came first.
		w = make(chan error, 1)
		var hm sync.Mutex
		answered := false
		go func() {
			err := writeBody(c.nc, req)
			w <- err // before the close below, so the reader sees it
			var be bodyError
			if errors.As(err, &be) {
				// The client's body failed: the upstream waits for the
				// rest, so unblock the reader. (A failed write to the
				// upstream leaves its answer, if any, to be read.)
				c.nc.Close()
				return
			}
			if err != nil {
				return
			}
			hm.Lock()
			if !answered {
				t.startHeaderTimer(c)
			}
			hm.Unlock()
		}()
		defer func() {
			hm.Lock()
			answered = true
			c.nc.SetReadDeadline(time.Time{})
			hm.Unlock()
		}()
	}
	res, err = t.readResponse(c, req, w == nil) // else the deferred func clears it
	if werr != nil && err != nil {
		err = werr
	}
	if err != nil {
		return nil, w, err
	}
	res.Uncompressed = gz && res.Body != http.NoBody && strings.EqualFold(res.Header.Get("Content-Encoding"), "gzip")
	return res, w, nil
}

// earlyAnswerWait bounds the wait for an answer after the request could
// not be written whole.
const earlyAnswerWait = 5 * time.Second

// readResponse reads the response headers on c, past any 1xx, within
// MaxHeaderBytes, and with clear set clears the read deadline that bounded
// the wait.
func (t *Transport) readResponse(c *conn, req *http.Request, clear bool) (*http.Response, error) {
	c.lr.n, c.lr.limited = MaxHeaderBytes+c.br.Buffered(), true
	defer func() { c.lr.limited = false }()
	for {
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		switch {
		case res.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("upstream: protocol switch (101) is not supported")
		case res.StatusCode >= 100 && res.StatusCode < 200:
			continue // 100 Continue, 103 Early Hints: the answer follows
		}
		if clear {
			c.nc.SetReadDeadline(time.Time{})
		}
		return res, nil
	}
}

// startHeaderTimer bounds the wait for the response headers.
func (t *Transport) startHeaderTimer(c *conn) {
	if t.HeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t.HeaderTimeout))
	}
}

// body is a response body read straight from the connection.
type body struct {
	t       *Transport
	c       *conn
	req     *http.Request
	res     *http.Response
	rc      io.ReadCloser
	ctx     context.Context
	stop    func() bool
	writing chan error // the request body's writer, or nil
	done    atomic.Bool
	eof     atomic.Bool // done at the body's end
}

func (b *body) Read(p []byte) (int, error) {
	if b.done.Load() {
		if b.eof.Load() {
			return 0, io.EOF
		}
		return 0, errors.New("upstream: read on a closed response body")
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.eof.Store(true)
		b.finish(true)
	case err != nil:
		b.finish(false)
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
	}
	return n, err
}

// Close closes the connection unless the body was read to its end.
func (b *body) Close() error {
	b.finish(false)
	return nil
}

// finish returns the connection to the pool after a clean end, if nothing
// else ended it (its context, a request body still being written), and
// closes it otherwise.
func (b *body) finish(clean bool) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	reuse := clean && b.stop() && !b.c.broken && !b.res.Close && !b.req.Close && b.c.br.Buffered() == 0
	if b.writing != nil {
		select {
		case err := <-b.writing:
			reuse = reuse && err == nil
		default:
			reuse = false // the upstream answered before the body ended
		}
	}
	if !reuse {
		b.stop()
		b.c.nc.Close()
		return
	}
	b.t.put(b.c)
}

// Ready reports whether a response body from this transport holds a whole
// server-sent event (up to its blank line) in its read buffer, so that
// reading it will not wait for the network: a proxy can then send the
// response headers together with the first event instead of on their own.
// A few buffered bytes are not enough: they may be a chunk-size line or
// half an event, and the rest may be a long time-to-first-token away. It
// reports false for any other body.
func Ready(r io.Reader) bool {
	b, ok := r.(*body)
	if !ok || b.done.Load() {
		return false
	}
	buf, _ := b.c.br.Peek(b.c.br.Buffered())
	return bytes.Contains(buf, eventEnd)
}

var eventEnd = []byte("\n\n")

// gzipBody decodes a gzip response body, starting at its first Read so
// that RoundTrip does not wait for the body.
type gzipBody struct {
	body io.ReadCloser
	zr   *gzip.Reader
	err  error
}

func (g *gzipBody) Read(p []byte) (int, error) {
	if g.zr == nil {
		if g.err != nil {
			return 0, g.err
		}
		zr, err := gzip.NewReader(g.body)
		if err != nil {
			g.err = err
			return 0, err
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

func (g *gzipBody) Close() error { return g.body.Close() }

// get returns an idle connection to key that is still open, or a new one.
func (t *Transport) get(ctx context.Context, key string) (*conn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		cs := t.idle[key]
		if len(cs) == 0 {
			t.mu.Unlock()
			break
		}
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		t.idle[key] = cs[:len(cs)-1]
		t.mu.Unlock()
		if now.Sub(c.idleAt) > t.idleTimeout() || !alive(c.nc) {
			c.nc.Close()
			continue
		}
		c.br = t.reader(&c.lr)
		return c, nil
	}
	nc, err := t.Dial(ctx, "tcp", key)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, lr: limitReader{nc: nc}, key: key}
	c.br = t.reader(&c.lr)
	return c, nil
}

// put keeps c for the next request to its host, or closes it when the
// pool for that host is full.
func (t *Transport) put(c *conn) {
	readers.Put(c.br)
	c.br = nil
	c.idleAt = time.Now()
	max := t.MaxIdlePerHost
	if max <= 0 {
		max = 100
	}
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[string][]*conn{}
	}
	cs := t.idle[c.key]
	// The oldest connections sit at the bottom: drop those idle too long,
	// so that connections the upstream has closed do not linger.
	var stale []*conn
	for len(cs) > 0 && c.idleAt.Sub(cs[0].idleAt) > t.idleTimeout() {
		stale = append(stale, cs[0])
		cs = cs[1:]
	}
	keep := len(cs) < max
	if keep {
		cs = append(cs, c)
	}
	t.idle[c.key] = cs
	if keep && !t.reaping {
		t.reaping = true
		if t.reaper == nil {
			t.reaper = time.AfterFunc(t.reapEvery(), t.reap)
		} else {
			t.reaper.Reset(t.reapEvery())
		}
	}
	t.mu.Unlock()
	for _, s := range stale {
		s.nc.Close()
	}
	if !keep {
		c.nc.Close()
	}
}

// reapEvery is how often idle connections are swept: there is no goroutine
// per connection to notice an upstream closing one, as net/http's read
// loop does, so a sweep does, within 5 s.
func (t *Transport) reapEvery() time.Duration { return min(t.idleTimeout(), 5*time.Second) }

// reap closes the idle connections that were idle too long or that the
// upstream closed (or sent something unasked), and comes back while any
// are left.
func (t *Transport) reap() {
	now := time.Now()
	var dead []*conn
	t.mu.Lock()
	for key, cs := range t.idle {
		kept := cs[:0]
		for _, c := range cs {
			if now.Sub(c.idleAt) > t.idleTimeout() || !alive(c.nc) {
				dead = append(dead, c)
			} else {
				kept = append(kept, c)
			}
		}
		clear(cs[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
		}
	}
	t.reaping = len(t.idle) > 0
	if t.reaping {
		t.reaper.Reset(t.reapEvery())
	}
	t.mu.Unlock()
	for _, c := range dead {
		c.nc.Close()
	}
}

// CloseIdleConnections closes the idle connections, here and in Fallback.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaping = false
	}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.nc.Close()
		}
	}
	if f, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return 90 * time.Second
}

// readers pools the connections' read buffers: an idle connection holds
// none.
var readers sync.Pool

func (t *Transport) reader(r io.Reader) *bufio.Reader {
	size := t.ReadBufferSize
	if size <= 0 {
		size = 2 << 10
	}
	if br, ok := readers.Get().(*bufio.Reader); ok && br.Size() == size {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, size)
}

// hostPort is u's host with its port, 80 if none is given.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// BytesBody is a request body held in memory: the transport writes it
// with the request headers in one system call, and sends it without a
// goroutine of its own. Set the request's ContentLength to len(b).
func BytesBody(b []byte) io.ReadCloser { return &bytesBody{b: b} }

type bytesBody struct {
	b   []byte
	off int
}

func (b *bytesBody) Read(p []byte) (int, error) {
	if b.off >= len(b.b) {
		return 0, io.EOF
	}
	n := copy(p, b.b[b.off:])
	b.off += n
	return n, nil
}

func (*bytesBody) Close() error { return nil }

// inMemory returns the body of req when the request carries none or one
// made by BytesBody, which is then written with its headers.
func inMemory(req *http.Request) ([]byte, bool) {
	switch b := req.Body.(type) {
	case nil:
		return nil, true
	case *bytesBody:
		return b.b[b.off:], true
	}
	if req.Body == http.NoBody {
		return nil, true
	}
	return nil, false
}

// bodyError is a failure to read the request body (the client's), as
// opposed to a failure to write it to the upstream.
type bodyError struct{ err error }

func (e bodyError) Error() string { return e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// bodyReader marks the request body's read errors as bodyError.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = bodyError{err}
	}
	return n, err
}

// writeBody sends a body that is still arriving: as it is if its length is
// known, else chunked.
func writeBody(nc net.Conn, req *http.Request) error {
	defer req.Body.Close()
	src := bodyReader{req.Body}
	if req.ContentLength > 0 {
		n, err := io.Copy(nc, io.LimitReader(src, req.ContentLength))
		if err == nil && n != req.ContentLength {
			err = bodyError{fmt.Errorf("upstream: request body ended after %d of %d bytes", n, req.ContentLength)}
		}
		return err
	}
	cw := httputil.NewChunkedWriter(nc)
	if _, err := io.Copy(cw, src); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	_, err := io.WriteString(nc, "\r\n")
	return err
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// heads pools the buffers request headers are written into.
var heads = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}

func putHead(b []byte) {
	if cap(b) <= 16<<10 {
		b = b[:0]
		heads.Put(&b)
	}
}

// requestHead renders req's request line and headers. Host comes from
// req.Host or the URL; Content-Length or chunked framing from
// ContentLength and the body. Like net/http, it asks for gzip when the
// request names no encoding, and reports so in gz: the response is then
// decoded here. A header name or value that could split the request is
// refused.
func requestHead(req *http.Request) (head []byte, gz bool, err error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return nil, false, fmt.Errorf("upstream: invalid Host %q", host)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validMethod(method) {
		return nil, false, fmt.Errorf("upstream: invalid method %q", method)
	}
	uri := req.URL.RequestURI()
	b := (*heads.Get().(*[]byte))[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			putHead(b)
			return nil, false, fmt.Errorf("upstream: invalid header name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				putHead(b)
				return nil, false, fmt.Errorf("upstream: invalid value for header %s", k)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if req.Close {
		b = append(b, "Connection: close\r\n"...)
	}
	if _, ok := req.Header["Accept-Encoding"]; !ok && req.Header.Get("Range") == "" && method != "HEAD" {
		b = append(b, "Accept-Encoding: gzip\r\n"...)
		gz = true
	}
	data, ok := inMemory(req)
	switch {
	case ok && len(data) > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(data)), 10)
		b = append(b, "\r\n"...)
	case ok:
		switch method {
		case "GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT":
		default:
			b = append(b, "Content-Length: 0\r\n"...)
		}
	case req.ContentLength > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, req.ContentLength, 10)
		b = append(b, "\r\n"...)
	default:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(b, "\r\n"...), gz, nil
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}
