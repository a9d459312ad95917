package server_test

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// relRawUpstream is an upstream that answers every request with the same
// raw bytes and closes the connection: it sends exactly the headers a test
// wants, which Go's own server would tidy up.
type relRawUpstream struct {
	ln    net.Listener
	count atomic.Int32
}

func newRelRawUpstream(t *testing.T, response string) *relRawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &relRawUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				u.count.Add(1)
				io.WriteString(c, response)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

func (u *relRawUpstream) url() string { return "http://" + u.ln.Addr().String() }

// TestHTTP1_HopByHopHeadersDropped: hop-by-hop headers, and headers the
// client names in Connection, cross the proxy in neither direction; naming
// Authorization in Connection does not strip the provider key.
func TestHTTP1_HopByHopHeadersDropped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	t.Run("request", func(t *testing.T) {
		for _, body := range []string{chatBody, ""} {
			hdrs := []string{
				"Authorization: Bearer " + h.key,
				"Connection: keep-alive, Authorization, X-Host-Final, X-Foo, Content-Type",
				"Keep-Alive: 1",
				"Proxy-Authorization: Basic eDp5",
				"Proxy-Connection: keep-alive",
				"Te: gzip, trailers",
				"Trailer: X-Trailer",
				"Upgrade: h2c",
				"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
				"X-Foo: 1",
				"X-Bar: 2",
				"X-Host-Final: api.openai.com",
				"X-Fake-Mode: echo",
			}
			method := "POST"
			if body == "" {
				method = "GET"
			}
			ans := relRaw(t, relAddr(h), relRequest(method, "/v1/chat/completions", hdrs, body), 10*time.Second)
			if len(ans) != 1 || ans[0].status != 200 {
				t.Fatalf("answers %+v, want one 200", ans)
			}
			var e struct{ Header http.Header }
			if err := json.Unmarshal([]byte(ans[0].body), &e); err != nil {
				t.Fatalf("echo body %q: %v", ans[0].body, err)
			}
			reqs := h.fake.Requests()
			if got := reqs[len(reqs)-1].Header.Get("Authorization"); got != "Bearer sk-upstream-openai-1" {
				t.Errorf("upstream Authorization = %q, want the provider key", got)
			}
			for _, name := range []string{"Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Upgrade", "X-Foo", "X-Host-Final"} {
				if v, ok := e.Header[name]; ok {
					t.Errorf("upstream got hop-by-hop header %s: %q", name, v)
				}
			}
			if e.Header.Get("X-Bar") != "2" {
				t.Errorf("an end-to-end header was dropped: X-Bar = %q", e.Header.Get("X-Bar"))
			}
		}
	})
	t.Run("response", func(t *testing.T) {
		up := newRelRawUpstream(t, "HTTP/1.1 200 OK\r\n"+
			"Content-Type: application/json\r\n"+
			"Connection: X-Secret, X-Other, keep-alive\r\n"+
			"X-Secret: 1\r\n"+
			"X-Other: 2\r\n"+
			"Keep-Alive: timeout=5, max=100\r\n"+
			"Proxy-Authenticate: Basic realm=\"up\"\r\n"+
			"Proxy-Connection: keep-alive\r\n"+
			"Upgrade: h2c\r\n"+
			"X-Kept: yes\r\n"+
			"Openai-Organization: org-fake\r\n"+
			"Content-Length: 2\r\n\r\n{}")
		h.addProvider("raw.test", "sk-raw-secret", up.url())
		a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "raw.test"))
		if a.status != 200 || a.body != "{}" {
			t.Fatalf("status %d body %q", a.status, a.body)
		}
		for _, name := range []string{"X-Secret", "X-Other", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Upgrade"} {
			if v, ok := a.header[name]; ok {
				t.Errorf("client got hop-by-hop header %s: %q", name, v)
			}
		}
		if c := a.header.Get("Connection"); strings.Contains(c, "X-Secret") {
			t.Errorf("client got Connection %q", c)
		}
		if a.header.Get("X-Kept") != "yes" || a.header.Get("Openai-Organization") != "org-fake" {
			t.Errorf("end-to-end headers lost: %v", a.header)
		}
	})
}

// TestHTTP2_NoClientIPOrRoutingHeadersUpstream: client-IP, routing and
// cookie headers never reach the provider, and the proxy adds none.
func TestHTTP2_NoClientIPOrRoutingHeadersUpstream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	sent := relAuth(h.key, "X-Fake-Mode", "echo",
		"X-Forwarded-For", "203.0.113.7",
		"X-Forwarded-Host", "evil.example",
		"X-Forwarded-Proto", "https",
		"X-Real-IP", "203.0.113.7",
		"Forwarded", "for=203.0.113.7;proto=https",
		"CF-Connecting-IP", "203.0.113.7",
		"True-Client-IP", "203.0.113.7",
		"X-Host-Final", "api.openai.com",
		"Cookie", "session=abc",
		"X-Stainless-Os", "Linux",
	)
	a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, sent)
	if a.status != 200 {
		t.Fatalf("status %d %s", a.status, a.body)
	}
	var e struct{ Header http.Header }
	json.Unmarshal([]byte(a.body), &e)
	for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Forwarded", "Cf-Connecting-Ip", "True-Client-Ip", "X-Host-Final", "Cookie", "Via"} {
		if v, ok := e.Header[name]; ok {
			t.Errorf("upstream got %s: %q", name, v)
		}
	}
	if e.Header.Get("X-Stainless-Os") != "Linux" {
		t.Errorf("an SDK header was dropped")
	}
	for k, vv := range e.Header {
		for _, v := range vv {
			if strings.Contains(v, "203.0.113.7") || strings.Contains(v, "127.0.0.1") {
				t.Errorf("upstream header %s carries a client address: %q", k, v)
			}
		}
	}
	// Without any such header, the proxy adds none of its own.
	a = relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Fake-Mode", "echo"))
	e.Header = nil
	json.Unmarshal([]byte(a.body), &e)
	var names []string
	for k := range e.Header {
		names = append(names, k)
	}
	for _, k := range names {
		switch k {
		case "Authorization", "Content-Type", "Content-Length", "Accept-Encoding", "User-Agent", "X-Fake-Mode":
		default:
			t.Errorf("the proxy added header %s: %q", k, e.Header[k])
		}
	}
}

// TestHTTP3_SmugglingProbes: ambiguous framing is refused with 400 (or 501),
// or read one way only; in every case the upstream sees exactly one request
// per request the proxy answered from the upstream.
func TestHTTP3_SmugglingProbes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	auth := "Authorization: Bearer " + h.key
	second := "GET /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nX-Fake-Mode: echo\r\nConnection: close\r\n\r\n"
	smuggled := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nX-Fake-Mode: echo\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
	for _, ct := range []string{"application/json", "text/plain"} {
		head := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nX-Fake-Mode: echo\r\nContent-Type: " + ct + "\r\n"
		cases := []struct {
			name string
			raw  string
			// refuse: the first request must be refused (400/501) rather
			// than read one way.
			refuse bool
		}{
			{"CL and TE", head + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + second, false},
			{"TE and CL", head + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + second, false},
			{"two Content-Lengths", head + "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}" + second, true},
			{"Content-Length list", head + "Content-Length: 2, 40\r\n\r\n{}" + second, true},
			{"xchunked", head + "Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + second, true},
			{"chunked, identity", head + "Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + second, true},
			{"two TE headers", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + second, true},
			{"TE with space before colon", head + "Transfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}" + second, true},
			{"TE obs-fold", head + "Transfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n\r\n{}" + second, true},
			{"bare LF in chunk size", head + "Transfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n" + second, true},
			{"chunk extension with NUL", head + "Transfer-Encoding: chunked\r\n\r\n2;\x00\r\n{}\r\n0\r\n\r\n" + second, false},
			{"negative Content-Length", head + "Content-Length: -1\r\n\r\n{}" + second, true},
			{"plus Content-Length", head + "Content-Length: +2\r\n\r\n{}" + second, true},
			{"hex Content-Length", head + "Content-Length: 0x2\r\n\r\n{}" + second, true},
			{"huge Content-Length", head + "Content-Length: 99999999999999999999999\r\n\r\n{}" + second, true},
			{"request in body", head + "Content-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled + second, false},
			{"request after short body", head + "Content-Length: 0\r\n\r\n" + smuggled[:len(smuggled)-2] + "{}", false},
			{"HTTP/1.0 chunked", strings.Replace(head, "HTTP/1.1", "HTTP/1.0", 1) + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", false},
			{"NUL in header", head + "X-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}" + second, true},
			{"header without colon", head + "X-A\r\nContent-Length: 2\r\n\r\n{}" + second, true},
		}
		for _, tc := range cases {
			t.Run(ct+"/"+tc.name, func(t *testing.T) {
				before := h.fake.Count()
				ans := relRaw(t, relAddr(h), tc.raw, 5*time.Second)
				if len(ans) == 0 {
					t.Fatalf("no answer")
				}
				fromUpstream := 0
				for _, a := range ans {
					if strings.Contains(a.body, `"method":`) {
						fromUpstream++
					}
				}
				// Every proxy handler has returned: whatever the proxy sent
				// upstream for this connection has been sent.
				h.inflight.Wait()
				// A request whose body broke off midway may have reached the
				// upstream incomplete (it cannot act on it); every complete
				// one must have been answered to the client, once.
				complete, incomplete := 0, 0
				for _, r := range h.fake.Requests()[before:] {
					if r.BodyComplete {
						complete++
					} else {
						incomplete++
					}
				}
				if complete != fromUpstream || incomplete > 1 {
					t.Errorf("upstream saw %d complete and %d incomplete requests, the client got %d upstream answers (%d answers in all)", complete, incomplete, fromUpstream, len(ans))
				}
				if tc.refuse && ans[0].status != 400 && ans[0].status != 501 {
					t.Errorf("first answer %d %q, want 400 or 501", ans[0].status, ans[0].body)
				}
				for _, r := range h.fake.Requests()[before:] {
					if strings.Contains(string(r.Body), "HTTP/1.1") && r.Path != "/v1/chat/completions" {
						t.Errorf("a smuggled request reached the upstream as %s %s", r.Method, r.Path)
					}
				}
			})
		}
	}
	relNoPanicLogged(t, h)
}

// TestHTTP4_FramingPreserved: a Content-Length answer keeps its length and
// bytes; a stream goes out chunked; trailers pass.
func TestHTTP4_FramingPreserved(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	payload := make([]byte, 1234)
	for i := range payload {
		payload[i] = byte(rand.IntN(256))
	}
	relUpstream(t, h, "cl.test", "sk-cl-secret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", "1234")
		w.Write(payload)
	}))
	res := h.do("POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "cl.test"})
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.ContentLength != 1234 || res.Header.Get("Content-Length") != "1234" || len(res.TransferEncoding) != 0 {
		t.Errorf("Content-Length answer: CL %d (%q), TE %v, err %v; want 1234 unchunked", res.ContentLength, res.Header.Get("Content-Length"), res.TransferEncoding, err)
	}
	if relSHA(b) != relSHA(payload) {
		t.Errorf("body differs from the upstream's")
	}

	// Raw view: the stream is chunked, the trailer answer announces and
	// sends its trailer.
	ans := relRaw(t, relAddr(h), relRequest("POST", "/v1/chat/completions",
		[]string{"Authorization: Bearer " + h.key, "X-Fake-Mode: sse:3:0"}, streamBody), 10*time.Second)
	if len(ans) != 1 || !ans[0].chunked || ans[0].err != nil || !strings.HasSuffix(ans[0].body, "data: [DONE]\n\n") {
		t.Errorf("stream: %+v, want one complete chunked answer", ans)
	}
	ans = relRaw(t, relAddr(h), relRequest("POST", "/v1/chat/completions",
		[]string{"Authorization: Bearer " + h.key, "X-Fake-Mode: trailer"}, chatBody), 10*time.Second)
	if len(ans) != 1 || ans[0].body != "body" || ans[0].trailer.Get("X-Fake-Trailer") != "done" {
		t.Errorf("trailer answer: %+v, want body %q and trailer X-Fake-Trailer: done", ans, "body")
	}
}

// TestHTTP5_GzipStreamDecodesToTheSameEvents: a client that accepts gzip, in
// front of a gzip SSE upstream, decodes exactly the events the upstream sent,
// the first one early; the usage row is right or unknown, never garbage.
func TestHTTP5_GzipStreamDecodesToTheSameEvents(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body string }{
		{"usage injected", streamBody},
		{"usage asked", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`},
		{"not chat", `{"model":"gpt-4o-mini","stream":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			path := "/v1/chat/completions"
			if tc.name == "not chat" {
				path = "/v1/responses"
			}
			req, _ := http.NewRequest("POST", h.proxy.URL+path, strings.NewReader(tc.body))
			req.Header = relAuth(h.key, "X-Fake-Mode", "gzip:5:150", "Accept-Encoding", "gzip")
			start := time.Now()
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body io.Reader = res.Body
			if res.Header.Get("Content-Encoding") == "gzip" {
				zr, err := gzip.NewReader(res.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			br := bufio.NewReader(body)
			first, err := br.ReadString('\n')
			firstAt := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(br)
			total := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			for i := range 5 {
				want += fakeai.Chunk("gpt-4o-mini", i)
			}
			if strings.Contains(tc.body, "include_usage") {
				want += fakeai.UsageChunk("gpt-4o-mini")
			}
			want += "data: [DONE]\n\n"
			if got := first + string(rest); got != want {
				t.Errorf("client decoded:\n%q\nwant:\n%q", got, want)
			}
			// The upstream spends 600 ms after its first event; the first
			// event must not wait for the rest (a ratio of this run's times).
			if firstAt > total/2 {
				t.Errorf("first event after %v of %v: the stream was buffered", firstAt, total)
			}
			h.flushUsage()
			rows := h.stats("")
			if len(rows) != 1 || rows[0].Requests != 1 {
				t.Fatalf("usage = %+v, want one row", rows)
			}
			r := rows[0]
			if !(r.PromptTokens == fakeai.PromptTokens && r.CompletionTokens == fakeai.CompletionTokens ||
				r.PromptTokens == 0 && r.CompletionTokens == 0) {
				t.Errorf("usage row %+v: tokens are neither right nor unknown", r)
			}
		})
	}
}

// TestHTTP6_ProxyErrorsAreOpenAIJSON provokes each error class aiproxy
// answers itself and checks status, code and shape.
func TestHTTP6_ProxyErrorsAreOpenAIJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{proxy: proxy.Config{HeaderTimeout: 300 * time.Millisecond, MaxBody: 1 << 20}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	h.addProvider("closed.test", "sk-closed-secret", closed)
	big := `{"model":"m","x":"` + strings.Repeat("a", 2<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		hdr                      http.Header
		status                   int
		code                     string
	}{
		{"bad X-Host-Final", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "a.com/\"x\"\xff"), 400, "invalid_request"},
		{"two X-Host-Final", "POST", "/v1/chat/completions", chatBody, http.Header{"Authorization": {"Bearer " + h.key}, "X-Host-Final": {"a", "b"}}, 400, "invalid_request"},
		{"no key", "POST", "/v1/chat/completions", chatBody, nil, 401, "invalid_api_key"},
		{"bad key with quotes", "POST", "/v1/chat/completions", chatBody, relAuth(`sk-cfw"\` + "\xff<"), 401, "invalid_api_key"},
		{"unknown provider", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "unknown.example"), 404, "unknown_provider"},
		{"unknown route", "POST", "/nope", chatBody, relAuth(h.key), 403, "forbidden"},
		{"unknown route with quotes", "GET", "/%22%3Cscript%3E%ff", "", nil, 403, "forbidden"},
		{"healthz wrong method", "POST", "/healthz", "", nil, 403, "forbidden"},
		{"me wrong method", "DELETE", "/me", "", relAuth(h.key), 405, "method_not_allowed"},
		{"me reset wrong method", "GET", "/me/reset", "", relAuth(h.key), 405, "method_not_allowed"},
		{"body too large", "POST", "/v1/chat/completions", big, relAuth(h.key), 413, "request_too_large"},
		{"body too large, not JSON", "POST", "/v1/chat/completions", big, relAuth(h.key, "Content-Type", "text/plain"), 413, "request_too_large"},
		{"upstream down", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "closed.test"), 502, "upstream_unreachable"},
		{"upstream timeout", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Fake-Mode", "hang"), 504, "upstream_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := relSend(t, nil, tc.method, h.proxy.URL+tc.path, tc.body, tc.hdr)
			relWantError(t, tc.name, a.status, a.header, a.body, tc.status, tc.code)
		})
	}
	t.Run("chunked body too large", func(t *testing.T) {
		for _, ct := range []string{"application/json", "text/plain"} {
			req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
			req.Header = relAuth(h.key, "Content-Type", ct)
			req.ContentLength = -1
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				// The proxy may answer and close before the client is done
				// sending; the answer is then lost to this client.
				t.Logf("%s: %v", ct, err)
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			relWantError(t, ct, res.StatusCode, res.Header, string(b), 413, "request_too_large")
		}
	})
	t.Run("database down", func(t *testing.T) {
		h2 := newHarness(t, harnessOpts{})
		h2.db.Close()
		for _, tc := range []struct {
			path   string
			status int
			code   string
		}{{"/v1/chat/completions", 500, "internal_error"}, {"/me", 500, "internal_error"}, {"/healthz", 503, "unavailable"}} {
			method := "POST"
			if tc.path != "/v1/chat/completions" {
				method = "GET"
			}
			a := relSend(t, nil, method, h2.proxy.URL+tc.path, chatBody, relAuth(h2.key))
			if tc.path == "/healthz" {
				a = relSend(t, nil, "GET", h2.proxy.URL+tc.path, "", nil)
			}
			relWantError(t, "db down "+tc.path, a.status, a.header, a.body, tc.status, tc.code)
			if strings.Contains(a.body, "sql") || strings.Contains(a.body, "database is closed") {
				t.Errorf("db down %s: the answer leaks the internal error: %s", tc.path, a.body)
			}
		}
	})
	relNoPanicLogged(t, h)
}
