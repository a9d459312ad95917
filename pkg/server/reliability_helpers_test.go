package server_test

// Helpers of the reliability suite (reliability_*_test.go): the tests that
// prove the promises of RELIABILITY.md and name them by ID. Every helper here
// is prefixed rel so that it cannot clash with the other tests of the package.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// relProbe is a listener that must never be reached: it counts the
// connections it accepts and closes them at once.
type relProbe struct {
	ln       net.Listener
	accepted atomic.Int32
}

// newRelProbe listens on ip (a 127.0.0.x address) on a free port.
func newRelProbe(t *testing.T, ip string) *relProbe {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("probe listen on %s: %v", ip, err)
	}
	p := &relProbe{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *relProbe) addr() string { return p.ln.Addr().String() }

// relAddr is the proxy's host:port.
func relAddr(h *harness) string { return h.proxy.Listener.Addr().String() }

// relRaw writes raw bytes to the proxy on a new connection and reads every
// response that comes back until the connection closes or timeout passes.
// A response whose body cannot be read whole is returned with its body so
// far and err set.
func relRaw(t *testing.T, addr, raw string, timeout time.Duration) []relAnswer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	return relReadAnswers(c)
}

// relAnswer is one response read off a raw connection.
type relAnswer struct {
	status  int
	header  http.Header
	trailer http.Header
	body    string
	err     error // reading the body failed
	chunked bool
}

func relReadAnswers(c net.Conn) []relAnswer {
	br := bufio.NewReader(c)
	var out []relAnswer
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		out = append(out, relAnswer{status: res.StatusCode, header: res.Header, trailer: res.Trailer, body: string(b), err: err,
			chunked: len(res.TransferEncoding) > 0 && res.TransferEncoding[0] == "chunked"})
		if err != nil || res.Close {
			return out
		}
	}
}

// relRequest builds the raw bytes of a request to the proxy.
func relRequest(method, target string, headers []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(body)
	return b.String()
}

// relError is an OpenAI-shaped error body.
type relError struct {
	Error struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// relOpenAIError reports whether body is {"error":{"message","type","code"}}
// with three non-empty strings and nothing else at the top, and returns the
// code.
func relOpenAIError(body string) (code string, ok bool) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &top); err != nil || len(top) != 1 || top["error"] == nil {
		return "", false
	}
	var e relError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return "", false
	}
	if e.Error.Message == nil || e.Error.Type == nil || e.Error.Code == nil ||
		*e.Error.Message == "" || *e.Error.Type == "" || *e.Error.Code == "" {
		return "", false
	}
	return *e.Error.Code, true
}

// relWantError checks an answer made by aiproxy itself: status, an
// application/json OpenAI error body with code.
func relWantError(t *testing.T, what string, status int, header http.Header, body string, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d; body %q", what, status, wantStatus, body)
	}
	code, ok := relOpenAIError(body)
	if !ok {
		t.Errorf("%s: body %q is not an OpenAI-shaped error", what, body)
		return
	}
	if wantCode != "" && code != wantCode {
		t.Errorf("%s: code %q, want %q", what, code, wantCode)
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// relSend sends a request with any headers (repeated ones too) and reads
// the whole answer.
func relSend(t *testing.T, client *http.Client, method, url, body string, hdr http.Header) relReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return relReply{status: res.StatusCode, header: res.Header, body: string(b)}
}

// relHdr builds a header from pairs.
func relHdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// relAuth is the header set of an authenticated proxy request.
func relAuth(key string, kv ...string) http.Header {
	h := relHdr(kv...)
	h.Set("Authorization", "Bearer "+key)
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	return h
}

// relLogLines returns the harness's log, one entry per line, and fails the
// test for any line that is not one JSON object (a forged or broken line).
func relLogLines(t *testing.T, h *harness) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(h.logs.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not one JSON object: %q", line)
			continue
		}
		out = append(out, m)
	}
	return out
}

// relWaitMsg waits until the log has at least n entries with msg.
func relWaitMsg(t *testing.T, h *harness, msg string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := strings.Count(h.logs.String(), `"msg":"`+msg+`"`)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log has %d %q entries after %v, want %d", got, msg, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// relNoPanicLogged fails if the log shows a recovered panic.
func relNoPanicLogged(t *testing.T, h *harness) {
	t.Helper()
	if s := h.logs.String(); strings.Contains(s, `"msg":"panic"`) || strings.Contains(s, "goroutine ") {
		t.Errorf("the log shows a panic:\n%s", s)
	}
}

func relSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// relUpstream starts an extra upstream with handler h and registers it as
// host with key.
func relUpstream(t *testing.T, h *harness, host, key string, handler http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	h.addProvider(host, key, srv.URL)
	return srv
}

// relDialRecorder is an upstream transport that records every address it
// dials and refuses any but allowed.
type relDialRecorder struct {
	mu      sync.Mutex
	dialed  []string
	allowed map[string]bool
}

// relTransport returns the proxy's own transport whose dials go through d.
func (d *relDialRecorder) transport() http.RoundTripper {
	tr := proxy.NewTransport(proxy.Config{DialTimeout: 5 * time.Second, HeaderTimeout: 10 * time.Second})
	tr.Proxy = nil
	orig := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.mu.Lock()
		d.dialed = append(d.dialed, addr)
		ok := d.allowed[addr]
		d.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("relDialRecorder: dial of %s refused by the test", addr)
		}
		return orig(ctx, network, addr)
	}
	return tr
}

func (d *relDialRecorder) allow(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.allowed == nil {
		d.allowed = map[string]bool{}
	}
	d.allowed[addr] = true
}

func (d *relDialRecorder) forbidden() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, a := range d.dialed {
		if !d.allowed[a] {
			out = append(out, a)
		}
	}
	return out
}

// relFDs counts this process's open file descriptors.
func relFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// relSettle waits up to timeout for goroutines and fds to come back within
// slack of the baseline and returns the last counts.
func relSettle(t *testing.T, baseG, baseFD, slackG, slackFD int, timeout time.Duration) (int, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g, fd := runtime.NumGoroutine(), relFDs(t)
		if g <= baseG+slackG && fd <= baseFD+slackFD || time.Now().After(deadline) {
			return g, fd
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// relUsageRows waits until the store holds n usage rows (the recorder writes
// as records come) and returns the totals row.
func relWaitUsage(t *testing.T, h *harness, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rows := h.stats("")
		if len(rows) == 1 && rows[0].Requests >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage rows = %+v after %v, want %d requests", rows, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// relNoKeepAlive is a client that opens a fresh connection per request and
// leaves no idle connection behind.
func relNoKeepAlive() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
}

// relReply is one response, read whole.
type relReply struct {
	status int
	header http.Header
	body   string
}
