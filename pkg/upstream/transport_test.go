package upstream_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/aiproxy/aiproxy/pkg/upstream"
)

// countingDialer dials loopback and counts the connections it opened.
type countingDialer struct {
	n atomic.Int32
	d net.Dialer
}

func (c *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return c.d.DialContext(ctx, network, addr)
}

// refuse is the fallback of the tests that must not reach it.
type refuse struct{ t *testing.T }

func (r refuse) RoundTrip(req *http.Request) (*http.Response, error) {
	r.t.Errorf("fallback called for %s", req.URL)
	return nil, errors.New("fallback")
}

func newTransport(t *testing.T) (*upstream.Transport, *countingDialer) {
	d := &countingDialer{}
	tr := &upstream.Transport{Dial: d.dial, Fallback: refuse{t}, HeaderTimeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, d
}

func do(t *testing.T, tr http.RoundTripper, method, u string, body io.ReadCloser, n int64) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Body, req.ContentLength = body, n
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return res, string(b)
}

// TestRoundTrip_FramingAndReuse: every response framing comes through
// whole, and a connection whose answer was read to its end serves the
// next request, except after a close-delimited answer.
func TestRoundTrip_FramingAndReuse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/chunked":
			for _, s := range []string{"a", "bb", "ccc"} {
				io.WriteString(w, s)
				w.(http.Flusher).Flush()
			}
		case "/echo":
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Length", r.Header.Get("Content-Length"))
			w.Header().Set("X-Chunked", strings.Join(r.TransferEncoding, ","))
			w.Write(got)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/trailer":
			w.Header().Set("Trailer", "X-Done")
			io.WriteString(w, "body")
			w.Header().Set("X-Done", "yes")
		}
	}))
	defer srv.Close()
	tr, d := newTransport(t)

	for _, tc := range []struct{ path, want string }{
		{"/length", "hello"}, {"/chunked", "abbccc"}, {"/empty", ""}, {"/length", "hello"},
	} {
		if _, got := do(t, tr, "GET", srv.URL+tc.path, nil, 0); got != tc.want {
			t.Errorf("GET %s = %q, want %q", tc.path, got, tc.want)
		}
	}
	res, got := do(t, tr, "GET", srv.URL+"/trailer", nil, 0)
	if got != "body" || res.Trailer.Get("X-Done") != "yes" {
		t.Errorf("trailer answer = %q, trailer %v; want body and X-Done: yes", got, res.Trailer)
	}
	// An in-memory body goes with its length; a bodyless POST says 0.
	res, got = do(t, tr, "POST", srv.URL+"/echo", upstream.BytesBody([]byte(`{"a":1}`)), 7)
	if got != `{"a":1}` || res.Header.Get("X-Length") != "7" {
		t.Errorf("POST in memory: %q, Content-Length %q", got, res.Header.Get("X-Length"))
	}
	res, _ = do(t, tr, "POST", srv.URL+"/echo", upstream.BytesBody(nil), 0)
	if res.Header.Get("X-Length") != "0" || res.Header.Get("X-Chunked") != "" {
		t.Errorf("bodyless POST: Content-Length %q, chunked %q; want 0 and none", res.Header.Get("X-Length"), res.Header.Get("X-Chunked"))
	}
	// A body still arriving goes chunked when its length is unknown.
	res, got = do(t, tr, "PUT", srv.URL+"/echo", io.NopCloser(strings.NewReader("streamed")), -1)
	if got != "streamed" || res.Header.Get("X-Chunked") != "chunked" || res.Header.Get("X-Method") != "PUT" {
		t.Errorf("streamed PUT: %q, chunked %q, method %q", got, res.Header.Get("X-Chunked"), res.Header.Get("X-Method"))
	}
	if n := d.n.Load(); n != 1 {
		t.Errorf("%d connections dialled for sequential requests, want 1 reused", n)
	}
}

// TestRoundTrip_ClosedIdleConnectionIsNotUsed: a connection the upstream
// closed while it sat idle is dropped before a request is written on it,
// so a POST is neither lost nor sent twice.
func TestRoundTrip_ClosedIdleConnectionIsNotUsed(t *testing.T) {
	var posts atomic.Int32
	closed := make(chan struct{}, 2)
	u := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		posts.Add(1)
		// A keep-alive answer, then the upstream closes the connection
		// (as at its idle timeout) and says so.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close()
		closed <- struct{}{}
	})
	tr, d := newTransport(t)
	do(t, tr, "POST", u, upstream.BytesBody([]byte("1")), 1)
	<-closed // on loopback the FIN is queued to the peer before close returns
	if _, got := do(t, tr, "POST", u, upstream.BytesBody([]byte("2")), 1); got != "ok" {
		t.Fatalf("second POST = %q, want ok", got)
	}
	if n := posts.Load(); n != 2 {
		t.Errorf("upstream saw %d POSTs, want 2", n)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("%d connections dialled, want 2 (the closed one dropped)", n)
	}
}

// TestIdleConnectionsAreReaped: connections left idle past IdleTimeout are
// closed without any further request to the host.
func TestIdleConnectionsAreReaped(t *testing.T) {
	closed := make(chan struct{}, 16)
	var opened atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed <- struct{}{}
		}
	}
	srv.Start()
	defer srv.Close()
	tr, _ := newTransport(t)
	tr.IdleTimeout = 50 * time.Millisecond
	// Requests at once: up to three connections, all idle afterwards.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { do(t, tr, "GET", srv.URL, nil, 0) })
	}
	wg.Wait()
	n := int(opened.Load())
	for i := range n {
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d idle connections closed, want all", i, n)
		}
	}
}

// TestRoundTrip_StreamAndCancel: a streamed answer arrives event by event,
// before the upstream ends it; cancelling the request closes the
// connection, the read returns the context's error, and the upstream's
// handler sees the client gone.
func TestRoundTrip_StreamAndCancel(t *testing.T) {
	gone := make(chan struct{})
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			io.WriteString(w, "data: event\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				close(gone)
				return
			}
		}
	}))
	defer srv.Close()
	tr, _ := newTransport(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, upstream.BytesBody([]byte("{}")))
	req.ContentLength = 2
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	for range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != "data: event\n" {
			t.Fatalf("read %q, %v; want an event", line, err)
		}
		br.ReadString('\n')
		next <- struct{}{}
	}
	cancel()
	if _, err := io.Copy(io.Discard, br); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	res.Body.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream never saw the client leave")
	}
}

// TestRoundTrip_CloseMidBodyDropsConnection: a body closed before its end
// closes the connection instead of draining it, and the next request
// dials afresh.
func TestRoundTrip_CloseMidBodyDropsConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(bytes.Repeat([]byte("x"), 1<<20))
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	tr, d := newTransport(t)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/big", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if _, err := res.Body.Read(make([]byte, 10)); err == nil {
		t.Error("read after Close succeeded")
	}
	if _, got := do(t, tr, "GET", srv.URL, nil, 0); got != "ok" {
		t.Errorf("next GET = %q", got)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("%d connections dialled, want 2", n)
	}
}

// rawServer answers each connection with answer, after reading the
// request head.
func rawServer(t *testing.T, answer func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				answer(c, br)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestRoundTrip_OddAnswers: 1xx before the answer, a close-delimited body,
// a header timeout, and an answer cut short.
func TestRoundTrip_OddAnswers(t *testing.T) {
	tr, _ := newTransport(t)
	u := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil close")
	})
	res, got := do(t, tr, "GET", u, nil, 0)
	if res.StatusCode != 200 || got != "until close" || res.Header.Get("X-A") != "1" {
		t.Errorf("after 1xx: %d %q, want 200 %q", res.StatusCode, got, "until close")
	}

	hold := make(chan struct{})
	defer close(hold)
	slow := rawServer(t, func(net.Conn, *bufio.Reader) { <-hold })
	tr.HeaderTimeout = 50 * time.Millisecond
	req, _ := http.NewRequestWithContext(t.Context(), "GET", slow, nil)
	var ne net.Error
	if _, err := tr.RoundTrip(req); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("silent upstream: err = %v, want a timeout", err)
	}
	tr.HeaderTimeout = 10 * time.Second

	huge := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		for range 2 * upstream.MaxHeaderBytes / len(line) {
			if _, err := io.WriteString(c, line); err != nil {
				return // the transport gave up: what is wanted
			}
		}
	})
	req, _ = http.NewRequestWithContext(t.Context(), "GET", huge, nil)
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Errorf("2 MiB of headers: err = %v, want the header limit", err)
	}

	cut := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
	})
	req, _ = http.NewRequestWithContext(t.Context(), "GET", cut, nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(res.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut answer: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestRoundTrip_EarlyAnswer: an upstream may answer while a streamed
// request body is still arriving; the answer comes back at once, and the
// body's writer ends with the request.
func TestRoundTrip_EarlyAnswer(t *testing.T) {
	tr, _ := newTransport(t)
	u := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
	})
	pr, pw := io.Pipe()
	defer pw.Close()
	pw2 := make(chan struct{})
	go func() { pw.Write([]byte("first part")); close(pw2) }()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", u, pr)
	req.ContentLength = -1
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 413 || string(b) != "big" {
		t.Errorf("early answer = %d %q, want 413 big", res.StatusCode, b)
	}
	<-pw2
	pw.CloseWithError(errors.New("client gone")) // the request's end
}

// TestReady: a body whose first bytes came with the headers is ready; one
// whose upstream has sent only headers is not.
func TestReady(t *testing.T) {
	tr, _ := newTransport(t)
	release := make(chan struct{})
	u := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
		const event = "e\r\ndata: first\n\n\r\n0\r\n\r\n"
		if _, err := c.Write([]byte(head + event)); err != nil { // one write: one segment
			return
		}
		<-release
	})
	late := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		<-release
		io.WriteString(c, "0\r\n\r\n")
	})
	// Half an event came with the headers: the rest may be long in coming.
	half := rawServer(t, func(c net.Conn, _ *bufio.Reader) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\ndata: ha\r\n"))
		<-release
	})
	defer close(release)
	for _, tc := range []struct {
		url  string
		want bool
	}{{u, true}, {late, false}, {half, false}} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", tc.url, nil)
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := upstream.Ready(res.Body); got != tc.want {
			t.Errorf("Ready = %v, want %v", got, tc.want)
		}
		res.Body.Close()
	}
	if upstream.Ready(strings.NewReader("x")) {
		t.Error("Ready(another reader) = true")
	}
}

// TestRoundTrip_EarlyAnswerInMemoryBody: an upstream that refuses a large
// in-memory body without reading it (a 401 for a bad key) and closes gets
// its own answer through, not a write error (STR-5: 4xx pass through).
func TestRoundTrip_EarlyAnswerInMemoryBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"bad key"}`)
	}))
	defer srv.Close()
	tr, _ := newTransport(t)
	big := bytes.Repeat([]byte("a"), 20<<20) // far more than the socket buffers hold
	res, got := do(t, tr, "POST", srv.URL, upstream.BytesBody(big), int64(len(big)))
	if res.StatusCode != http.StatusUnauthorized || got != `{"error":"bad key"}` {
		t.Errorf("early answer = %d %q, want the upstream's 401", res.StatusCode, got)
	}
}

// TestRoundTrip_Gzip: like net/http, the transport asks for gzip when the
// request names no encoding, and decodes what it asked for; an encoding
// the client asked for itself passes through.
func TestRoundTrip_Gzip(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "gzip" {
			io.WriteString(w, "plain")
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, "decoded")
		zw.Close()
	}))
	defer srv.Close()
	tr, _ := newTransport(t)
	res, got := do(t, tr, "GET", srv.URL, nil, 0)
	if got != "decoded" || res.Header.Get("Content-Encoding") != "" || !res.Uncompressed {
		t.Errorf("asked by the transport: %q, encoding %q", got, res.Header.Get("Content-Encoding"))
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Encoding") != "gzip" || res.Uncompressed {
		t.Errorf("asked by the client: encoding %q, want gzip passed through", res.Header.Get("Content-Encoding"))
	}
}

// TestRoundTrip_RefusesSplitting: a header value with a line break is
// refused, never written.
func TestRoundTrip_RefusesSplitting(t *testing.T) {
	tr, d := newTransport(t)
	for _, h := range []http.Header{
		{"X-A": {"1\r\nX-Injected: 1"}},
		{"X-B\r\nX-Injected": {"1"}},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://127.0.0.1:1/", nil)
		req.Header = h
		if _, err := tr.RoundTrip(req); err == nil {
			t.Errorf("header %q accepted", h)
		}
	}
	if n := d.n.Load(); n > 2 {
		t.Errorf("dialled %d times", n)
	}
}

// TestRoundTrip_Fallback: HTTPS and proxied requests go to the fallback.
func TestRoundTrip_Fallback(t *testing.T) {
	var hits []string
	fb := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		hits = append(hits, r.URL.String())
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	tr := &upstream.Transport{Dial: (&net.Dialer{}).DialContext, Fallback: fb,
		Proxy: func(r *http.Request) (*url.URL, error) {
			if r.URL.Host == "proxied.test" {
				return url.Parse("http://127.0.0.1:3128")
			}
			return nil, nil
		}}
	for _, u := range []string{"https://api.openai.com/v1/models", "http://proxied.test/v1/models"} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", u, nil)
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	if len(hits) != 2 {
		t.Errorf("fallback got %v, want both requests", hits)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestMain fails the package if a test leaves a goroutine behind: the
// transport starts none of its own but for a streamed request body.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
