package server_test

// Tests for what an attacker with a user key, or without one, could still do
// before the hardening pass (docs/reliability.md, "Hardening"). Each fails
// against the code before its fix.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
)

// rawRequest writes req on a new connection to the proxy and returns the
// connection and a reader of its answer. The connection's deadline bounds
// the test, it is not what the test measures.
func rawRequest(t *testing.T, h *harness, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// A request that will be refused (no key, an unknown route, a wrong admin
// token) is answered without waiting for the body it announced, and its
// connection is closed after the answer.
func TestRefusedRequest_AnsweredWithoutWaitingForBody(t *testing.T) {
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: "Admin-Token-0123456789abcdefghij"}})
	for _, tc := range []struct {
		name, path, auth string
		status           int
	}{
		{"no key", "/v1/chat/completions", "", 401},
		{"wrong key", "/v1/chat/completions", "Authorization: Bearer sk-cfwnope\r\n", 401},
		{"unknown route", "/nowhere/x", "", 403},
		{"wrong admin token", "/Wrong-Token-0123456789abcdefghijk/register/bob", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawRequest(t, h, "POST "+tc.path+" HTTP/1.1\r\nHost: x\r\n"+tc.auth+
				"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer while the body is outstanding: %v", err)
			}
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			io.Copy(io.Discard, res.Body)
			// The server closes the connection rather than reading the body.
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("connection still open after the answer: %v", err)
			}
			_ = c
		})
	}
}

// A client with a key that stops sending its body gets a 400 once the
// (injectable) per-read body timeout passes, not a handler held forever.
func TestSlowBody_BoundedBetweenReads(t *testing.T) {
	h := newHarness(t, harnessOpts{proxy: proxy.Config{BodyTimeout: 200 * time.Millisecond}})
	_, br := rawRequest(t, h, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+h.key+
		"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", res.StatusCode)
	}
	if n := h.fake.Count(); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
}

// Client-controlled values that are stored or logged are cut to a bound:
// a huge model name or path costs the disk a few hundred bytes.
func TestClientValues_ClippedInUsageAndLog(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	model := strings.Repeat("m", 1<<20)
	res := h.do("POST", "/v1/chat/completions", `{"model":"`+model+`","messages":[]}`, bearer(h.key))
	readAll(t, res)
	longPath := "/v1/" + strings.Repeat("p", 64<<10)
	res = h.do("GET", longPath, "", bearer(h.key))
	readAll(t, res)
	res = h.do("GET", longPath, "", nil) // no key: 401
	if res.StatusCode != 401 {
		t.Errorf("no key: status %d", res.StatusCode)
	}
	readAll(t, res)
	h.flushUsage()
	for _, r := range h.stats("model") {
		if len(r.Key) > aiproxy.MaxModelLen {
			t.Errorf("stored model of %d bytes", len(r.Key))
		}
	}
	if n := len(h.logs.String()); n > 16<<10 {
		t.Errorf("three requests wrote %d bytes of log", n)
	}
}

// No user key leaves aiproxy: not in any of the headers SDKs put it in,
// not in the query string, not in a header of the client's own choosing.
func TestUserKey_NeverForwarded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, hdr := range []map[string]string{
		{"X-Api-Key": h.key},
		{"Api-Key": h.key},
		{"X-Goog-Api-Key": h.key},
		{"Authorization": "Bearer " + h.key, "X-Custom": "copy " + h.key},
	} {
		hdr["X-Fake-Mode"] = "echo"
		res := h.do("POST", "/v1/chat/completions?key="+h.key+"&keep=1", chatBody, hdr)
		body := readAll(t, res)
		if res.StatusCode != 200 {
			t.Fatalf("%v: status %d %s", hdr, res.StatusCode, body)
		}
	}
	for _, r := range h.fake.Requests() {
		for name, vv := range r.Header {
			for _, v := range vv {
				if strings.Contains(v, "sk-cfw") {
					t.Errorf("header %s carried a user key upstream", name)
				}
			}
		}
		if strings.Contains(r.Query, "sk-cfw") || !strings.Contains(r.Query, "keep=1") {
			t.Errorf("query upstream = %q", r.Query)
		}
	}
}

// Two different user keys in one request are refused.
func TestUserKey_TwoDifferentKeysRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	other := h.createUser("bob")
	res := h.do("POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Api-Key": other})
	if body := readAll(t, res); res.StatusCode != 401 || !strings.Contains(body, "invalid_api_key") {
		t.Errorf("status %d %s", res.StatusCode, body)
	}
	if h.fake.Count() != 0 {
		t.Error("request went upstream")
	}
}

// The OpenAI organization and project headers of the client never choose
// part of the shared account.
func TestOrgAndProjectHeaders_NotForwarded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	hdr := bearer(h.key)
	hdr["OpenAI-Organization"] = "org-other"
	hdr["OpenAI-Project"] = "proj_other"
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, hdr))
	for _, r := range h.fake.Requests() {
		if r.Header.Get("Openai-Organization") != "" || r.Header.Get("Openai-Project") != "" {
			t.Errorf("forwarded: %v", r.Header)
		}
	}
}

// upstreamFunc registers host as a provider served by f and returns it.
func upstreamFunc(t *testing.T, h *harness, host, key string, f http.HandlerFunc) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(f)
	t.Cleanup(up.Close)
	h.addProvider(host, key, up.URL)
	return up
}

// Paths on /{host}/… go upstream as the client encoded them; a dot segment
// or an encoded ? is refused before anything goes upstream.
func TestHostPath_ForwardedEncoded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var mu sync.Mutex
	var seen []string
	upstreamFunc(t, h, "models.example", "sk-upstream-models-0001", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.EscapedPath())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	})
	res := h.do("GET", "/models.example/v1/models/org%2Fmodel", "", bearer(h.key))
	readAll(t, res)
	for _, p := range []string{"/models.example/v1/..%2F..%2Fadmin", "/models.example/v1/chat/completions%3F", "/v1/x/%2e%2e/y"} {
		res := h.do("GET", p, "", bearer(h.key))
		if body := readAll(t, res); res.StatusCode != 400 {
			t.Errorf("%s: status %d %s", p, res.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "/v1/models/org%2Fmodel" {
		t.Errorf("upstream saw %q", seen)
	}
}

// A provider key echoed anywhere in an answer (after 1 MiB of body, in a
// trailer, in a redirect's Location) reaches the client masked.
func TestProviderKey_ScrubbedAnywhereInAnswer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	const pkey = "sk-upstream-echo-abcdefghijklmnop"
	upstreamFunc(t, h, "echo.example", pkey, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/big":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(200)
			io.WriteString(w, strings.Repeat("x", 1<<20+3))
			io.WriteString(w, "key="+pkey)
		case "/v1/trailer":
			w.Header().Set("Trailer", "X-Echo")
			w.WriteHeader(200)
			io.WriteString(w, "body")
			w.Header().Set("X-Echo", pkey)
		case "/v1/redirect":
			http.Redirect(w, r, "https://elsewhere.example/?k="+pkey, http.StatusFound)
		}
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/v1/big", "/v1/trailer", "/v1/redirect"} {
		req, _ := http.NewRequest("GET", h.proxy.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+h.key)
		req.Header.Set("X-Host-Final", "echo.example")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		all := body + fmt.Sprint(res.Header) + fmt.Sprint(res.Trailer)
		if strings.Contains(all, pkey) {
			t.Errorf("%s: provider key reached the client", p)
		}
		if p == "/v1/big" && len(body) != 1<<20+3+4+len(pkey) {
			t.Errorf("%s: body of %d bytes", p, len(body))
		}
	}
}

// An answer in an encoding aiproxy cannot read (deflate, br) is refused: it
// could neither be scrubbed nor read for usage.
func TestUnreadableEncoding_Refused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var ae string
	upstreamFunc(t, h, "deflate.example", "sk-upstream-deflate-000001", func(w http.ResponseWriter, r *http.Request) {
		ae = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Encoding", "deflate")
		io.WriteString(w, "\x78\x9c")
	})
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "deflate.example"
	hdr["Accept-Encoding"] = "deflate, br"
	res := h.do("POST", "/v1/chat/completions", chatBody, hdr)
	if body := readAll(t, res); res.StatusCode != 502 {
		t.Errorf("status %d %s", res.StatusCode, body)
	}
	if ae != "gzip" {
		t.Errorf("upstream was asked for %q, want gzip only", ae)
	}
}

// A metered request whose body aiproxy cannot read unambiguously is refused
// before it goes upstream, whatever its Content-Type says.
func TestMeteredBody_AmbiguousRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for name, body := range map[string]string{
		"duplicate stream":          `{"model":"m","stream":false,"stream":true}`,
		"stream_options not object": `{"model":"m","stream":true,"stream_options":"x"}`,
		"invalid utf-8":             "{\"model\":\"m\xff\",\"stream\":true}",
		"not an object":             `[1]`,
		"trailing data":             `{"model":"m"}{"stream":true}`,
	} {
		req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+h.key)
		req.Header.Set("Content-Type", "text/plain")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, res); res.StatusCode != 400 {
			t.Errorf("%s: status %d %s", name, res.StatusCode, b)
		}
	}
	if n := h.fake.Count(); n != 0 {
		t.Errorf("%d ambiguous bodies went upstream", n)
	}
}

// Requests refused before they reach a provider (401, 400, 404
// unknown_provider) are not usage, so an unregistered host never shows in
// stats.
func TestRefusedRequests_NotUsage(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "unregistered.example"
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, hdr))
	hdr["X-Host-Final"] = "bad host"
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, hdr))
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, nil))
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key))) // the one real request
	h.flushUsage()
	rows := h.stats("provider")
	if len(rows) != 1 || rows[0].Key != "api.openai.com" || rows[0].Requests != 1 {
		t.Errorf("stats by provider = %+v", rows)
	}
}

// With --cors-origins, the upstream's Vary is kept beside aiproxy's
// Vary: Origin, not in its place.
func TestCORS_VaryOriginKept(t *testing.T) {
	h := newHarness(t, harnessOpts{server: server.Config{CORSOrigins: []string{"https://app.example"}}})
	upstreamFunc(t, h, "vary.example", "sk-upstream-vary-0000001", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Encoding")
		io.WriteString(w, "{}")
	})
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "vary.example"
	hdr["Origin"] = "https://app.example"
	res := h.do("GET", "/v1/models", "", hdr)
	readAll(t, res)
	vary := strings.Join(res.Header.Values("Vary"), ",")
	if !strings.Contains(vary, "Origin") || !strings.Contains(vary, "Accept-Encoding") {
		t.Errorf("Vary = %q", vary)
	}
}

// A client that stops reading a streamed answer is dropped once a write has
// been blocked for the (injectable) write timeout; the upstream request is
// cancelled with it.
func TestStalledClient_ReleasedByWriteTimeout(t *testing.T) {
	h := newHarness(t, harnessOpts{proxy: proxy.Config{WriteTimeout: 300 * time.Millisecond}})
	const pkey = "sk-upstream-flood-0000001"
	stopped := make(chan struct{})
	upstreamFunc(t, h, "flood.example", pkey, func(w http.ResponseWriter, r *http.Request) {
		defer close(stopped)
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := "data: " + strings.Repeat("x", 32<<10) + "\n\n"
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	c, br := rawRequest(t, h, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+h.key+
		"\r\nX-Host-Final: flood.example\r\nContent-Type: application/json\r\nContent-Length: "+
		fmt.Sprint(len(streamBody))+"\r\n\r\n"+streamBody)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	// Read nothing more: the proxy's writes block, then time out, and the
	// upstream request is cancelled.
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("upstream stream still running while the client reads nothing")
	}
	_ = c
}

// Every answer carries an X-Request-Id that its log line names too; a sane
// id from the client is kept, anything else replaced.
func TestRequestID_InAnswerAndLog(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, tc := range []struct {
		path, sent string
		keep       bool
	}{
		{"/v1/chat/completions", "client-id_1.2", true},
		{"/v1/chat/completions", "bad id!", false},
		{"/healthz", strings.Repeat("a", 129), false},
		{"/nowhere", "", false},
	} {
		hdr := bearer(h.key)
		if tc.sent != "" {
			hdr["X-Request-Id"] = tc.sent
		}
		res := h.do("POST", tc.path, chatBody, hdr)
		readAll(t, res)
		id := res.Header.Get("X-Request-Id")
		if tc.keep && id != tc.sent || !tc.keep && (id == "" || id == tc.sent) {
			t.Errorf("%s with %q: X-Request-Id %q", tc.path, tc.sent, id)
		}
		h.inflight.Wait()
		if !strings.Contains(h.logs.String(), `"request_id":"`+id+`"`) {
			t.Errorf("%s: no log line names %q", tc.path, id)
		}
	}
}
