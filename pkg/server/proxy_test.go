package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.uber.org/goleak"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
)

func sdkClient(h *harness, key string, opts ...option.RequestOption) openai.Client {
	base := []option.RequestOption{
		option.WithBaseURL(h.proxy.URL + "/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	}
	return openai.NewClient(append(base, opts...)...)
}

func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say this is a test")},
	}
}

func TestProxy_SDK(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	groq := fakeai.New()
	groqSrv := httptest.NewServer(groq)
	defer groqSrv.Close()
	h.addProvider("api.groq.com", "gsk-upstream-groq", groqSrv.URL)

	cases := []struct {
		name     string
		client   openai.Client
		upstream *fakeai.Server
		key      string
	}{
		{"default provider", sdkClient(h, h.key), h.fake, "sk-upstream-openai-1"},
		{"X-Host-Final", sdkClient(h, h.key, option.WithHeader("X-Host-Final", "api.groq.com")), groq, "gsk-upstream-groq"},
		{"host in path", openai.NewClient(option.WithBaseURL(h.proxy.URL+"/api.groq.com/openai/v1/"), option.WithAPIKey(h.key), option.WithMaxRetries(0)), groq, "gsk-upstream-groq"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/non-stream", func(t *testing.T) {
			before := tc.upstream.Count()
			res, err := tc.client.Chat.Completions.New(context.Background(), chatParams())
			if err != nil {
				t.Fatalf("Chat.Completions.New: %v", err)
			}
			if got := res.Choices[0].Message.Content; got != "Hello!" {
				t.Errorf("content = %q, want Hello!", got)
			}
			if res.Usage.TotalTokens != fakeai.PromptTokens+fakeai.CompletionTokens {
				t.Errorf("usage = %+v", res.Usage)
			}
			reqs := tc.upstream.Requests()
			if len(reqs) != before+1 {
				t.Fatalf("upstream saw %d requests, want %d", len(reqs), before+1)
			}
			got := reqs[len(reqs)-1]
			if auth := got.Header.Get("Authorization"); auth != "Bearer "+tc.key {
				t.Errorf("upstream Authorization = %q, want the provider key", auth)
			}
			if got.Header.Get("X-Host-Final") != "" {
				t.Errorf("X-Host-Final reached the upstream")
			}
			if !strings.HasSuffix(got.Path, "/chat/completions") {
				t.Errorf("upstream path = %q", got.Path)
			}
		})
		t.Run(tc.name+"/stream", func(t *testing.T) {
			stream := tc.client.Chat.Completions.NewStreaming(context.Background(), chatParams(),
				option.WithHeader("X-Fake-Mode", "sse:5:0"))
			var text strings.Builder
			chunks := 0
			for stream.Next() {
				c := stream.Current()
				if len(c.Choices) > 0 {
					text.WriteString(c.Choices[0].Delta.Content)
				}
				chunks++
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if chunks != 5 || text.String() != "tok0tok1tok2tok3tok4" {
				t.Errorf("got %d chunks %q, want 5 chunks tok0…tok4 and no usage chunk", chunks, text.String())
			}
		})
	}
	// The path-named route sends the rest of the path, /openai/v1/…, to
	// the provider; the X-Host-Final route sends the path unchanged.
	paths := map[string]int{}
	for _, r := range groq.Requests() {
		paths[r.Path]++
	}
	if paths["/openai/v1/chat/completions"] != 2 || paths["/v1/chat/completions"] != 2 {
		t.Errorf("groq upstream paths = %v, want 2 of /openai/v1/… (path route) and 2 of /v1/… (header route)", paths)
	}
}

func TestProxy_SDKErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	bad := sdkClient(h, "sk-cfw"+strings.Repeat("x", 45))
	_, err := bad.Chat.Completions.New(context.Background(), chatParams())
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
		t.Fatalf("bad key: err = %v, want a 401 invalid_api_key openai.Error", err)
	}
	good := sdkClient(h, h.key)
	_, err = good.Chat.Completions.New(context.Background(), chatParams(), option.WithHeader("X-Fake-Mode", "status:429"))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "fake_429" {
		t.Fatalf("upstream 429: err = %v, want the upstream's own 429 error", err)
	}
}

// TestProxy_StreamNotBuffered proves each event reaches the client while
// the upstream is still holding back the next one (STR-1).
func TestProxy_StreamNotBuffered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	hdr := bearer(h.key)
	hdr["X-Fake-Mode"] = "gated:3"
	res := h.do("POST", "/v1/chat/completions", streamBody, hdr)
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	br := bufio.NewReader(res.Body)
	for i := 0; i < 3; i++ {
		if i > 0 {
			h.fake.Gate <- struct{}{} // release event i only after event i-1 was read
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if !strings.Contains(line, `"tok`) {
			t.Fatalf("event %d = %q", i, line)
		}
		if _, err := br.ReadString('\n'); err != nil { // blank line
			t.Fatal(err)
		}
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "data: [DONE]\n\n" {
		t.Errorf("tail = %q, want only [DONE] (usage chunk stripped)", rest)
	}
}

// TestProxy_ClientDisconnectCancelsUpstream (STR-3).
func TestProxy_ClientDisconnectCancelsUpstream(t *testing.T) {
	// Registered before the harness, so it runs after the harness's cleanup.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	h := newHarness(t, harnessOpts{})
	for _, mode := range []string{"gated:5", "hang"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(streamBody))
			req.Header.Set("Authorization", "Bearer "+h.key)
			req.Header.Set("X-Fake-Mode", mode)
			done := make(chan struct{})
			go func() {
				defer close(done)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				br := bufio.NewReader(res.Body)
				br.ReadString('\n') // first event arrives
				cancel()
				io.Copy(io.Discard, br)
				res.Body.Close()
			}()
			<-h.fake.Started
			if mode == "hang" {
				cancel() // the upstream has the request and has not answered
			}
			select {
			case reason := <-h.fake.Done:
				if reason != "canceled" {
					t.Errorf("upstream ended with %q, want canceled", reason)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("upstream was not cancelled within 5 s of the client leaving")
			}
			<-done
		})
	}
	h.proxy.CloseClientConnections()
	http.DefaultClient.CloseIdleConnections()
}

func TestProxy_UpstreamCutAbortsClient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	hdr := bearer(h.key)
	hdr["X-Fake-Mode"] = "cut:2"
	res := h.do("POST", "/v1/chat/completions", streamBody, hdr)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil {
		t.Fatalf("read of a cut stream succeeded with %q; want an error", b)
	}
	if !strings.Contains(string(b), "tok1") {
		t.Errorf("events before the cut were lost: %q", b)
	}
}

func TestProxy_Refusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	deleted := h.createUser("bob")
	if err := h.svc.DeleteUser(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	old := h.createUser("carol")
	if _, err := h.svc.ResetUser(context.Background(), "carol", admin.Expiry{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"no key", "/v1/chat/completions", nil, 401, "invalid_api_key"},
		{"not a bearer", "/v1/chat/completions", map[string]string{"Authorization": "Basic " + h.key}, 401, "invalid_api_key"},
		{"unknown key", "/v1/chat/completions", bearer("sk-cfw" + strings.Repeat("A", 45)), 401, "invalid_api_key"},
		{"provider key", "/v1/chat/completions", bearer("sk-upstream-openai-1"), 401, "invalid_api_key"},
		{"deleted user", "/v1/chat/completions", bearer(deleted), 401, "invalid_api_key"},
		{"reset key", "/v1/chat/completions", bearer(old), 401, "invalid_api_key"},
		{"sql in key", "/v1/chat/completions", bearer("' OR 1=1 --"), 401, "invalid_api_key"},
		{"unknown provider", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "evil.example"}, 404, "unknown_provider"},
		{"ip literal", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "169.254.169.254"}, 404, "unknown_provider"},
		{"scheme", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "http://api.openai.com"}, 400, "invalid_request"},
		{"userinfo", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "api.openai.com@evil.example"}, 400, "invalid_request"},
		{"fragment", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "evil.example#api.openai.com"}, 400, "invalid_request"},
		{"unknown route", "/nope/v1/chat/completions", bearer(h.key), 403, "forbidden"},
		{"root", "/", nil, 403, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.fake.Count()
			res := h.do("POST", tc.path, chatBody, tc.hdr)
			body := readAll(t, res)
			if res.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d; body %s", res.StatusCode, tc.status, body)
			}
			var e struct {
				Error struct{ Message, Type, Code string }
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != tc.code || e.Error.Type == "" || e.Error.Message == "" {
				t.Errorf("body = %s, want an OpenAI error with code %q", body, tc.code)
			}
			if h.fake.Count() != before {
				t.Errorf("the upstream was contacted")
			}
		})
	}
}

// TestProxy_BareHostInPath: a registered host without a dot or port (an
// intranet name) is routable by path too.
func TestProxy_BareHostInPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.addProvider("ollama", "local-key", h.upstream.URL)
	res := h.do("POST", "/ollama/v1/chat/completions", chatBody, bearer(h.key))
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d %s", res.StatusCode, body)
	}
	reqs := h.fake.Requests()
	if got := reqs[len(reqs)-1]; got.Path != "/v1/chat/completions" || got.Header.Get("Authorization") != "Bearer local-key" {
		t.Errorf("upstream got %s with %q", got.Path, got.Header.Get("Authorization"))
	}
}

func TestProxy_HostVariantsMatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, host := range []string{"API.OpenAI.com", "api.openai.com.", "Api.Openai.Com."} {
		hdr := bearer(h.key)
		hdr["X-Host-Final"] = host
		res := h.do("POST", "/v1/chat/completions", chatBody, hdr)
		if body := readAll(t, res); res.StatusCode != 200 {
			t.Errorf("X-Host-Final %q: status %d %s", host, res.StatusCode, body)
		}
	}
}

func TestProxy_RedirectNotFollowed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	var probe atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { probe.Add(1) }))
	defer target.Close()
	hdr := bearer(h.key)
	hdr["X-Fake-Mode"] = "redirect:" + target.URL + "/steal"
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != target.URL+"/steal" {
		t.Errorf("status %d Location %q, want the upstream's 302 passed through", res.StatusCode, res.Header.Get("Location"))
	}
	if probe.Load() != 0 {
		t.Errorf("the redirect target was contacted %d times", probe.Load())
	}
}

func TestProxy_SpreadsOverKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.addProvider("api.openai.com", "sk-upstream-openai-2", "")
	h.addProvider("api.openai.com", "sk-upstream-openai-3", "")
	for i := 0; i < 9; i++ {
		readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)))
	}
	seen := map[string]int{}
	for _, r := range h.fake.Requests() {
		seen[r.Header.Get("Authorization")]++
	}
	for _, k := range []string{"sk-upstream-openai-1", "sk-upstream-openai-2", "sk-upstream-openai-3"} {
		if seen["Bearer "+k] == 0 {
			t.Errorf("key %s never used: %v", k, seen)
		}
	}
}

func TestProxy_UpstreamFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{proxy: proxy.Config{HeaderTimeout: 300 * time.Millisecond}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	h.addProvider("closed.test", "sk-closed", closed)

	res := h.do("POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Host-Final": "closed.test"})
	if body := readAll(t, res); res.StatusCode != 502 || !strings.Contains(body, "upstream_unreachable") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("closed port: %d %s, want 502 upstream_unreachable without the address", res.StatusCode, body)
	}
	res = h.do("POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Fake-Mode": "hang"})
	if body := readAll(t, res); res.StatusCode != 504 || !strings.Contains(body, "upstream_timeout") {
		t.Errorf("hang: %d %s, want 504 upstream_timeout", res.StatusCode, body)
	}
	// The 429 goes last: the key then rests (CONTRACT section 5), and the
	// next request would not reach the upstream.
	for _, code := range []string{"500", "503", "429"} {
		before := h.fake.Count()
		res = h.do("POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Fake-Mode": "status:" + code})
		body := readAll(t, res)
		if res.Status[:3] != code || res.Header.Get("Retry-After") != "7" || res.Header.Get("X-Ratelimit-Remaining-Requests") != "0" || !strings.Contains(body, "fake_"+code) {
			t.Errorf("status %s: got %d %v %s, want it unchanged", code, res.StatusCode, res.Header, body)
		}
		if n := h.fake.Count() - before; n != 1 {
			t.Errorf("status %s: upstream saw %d requests, want 1 (no retry)", code, n)
		}
	}
}

func TestProxy_CORS(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	req, _ := http.NewRequest("OPTIONS", h.proxy.URL+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type, x-stainless-os, x-stainless-retry-count")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "x-stainless-retry-count") ||
		res.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight: %d %v", res.StatusCode, res.Header)
	}
	hdr := bearer(h.key)
	hdr["Origin"] = "https://app.example"
	res = h.do("POST", "/v1/chat/completions", chatBody, hdr)
	readAll(t, res)
	if got := res.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "*" {
		t.Errorf("ACAO = %v, want exactly *", got)
	}

	// An allowlist echoes only its own origins.
	h2 := newHarness(t, harnessOpts{server: server.Config{CORSOrigins: []string{"https://ok.example"}}})
	for origin, want := range map[string]string{"https://ok.example": "https://ok.example", "https://evil.example": ""} {
		hdr := bearer(h2.key)
		hdr["Origin"] = origin
		res := h2.do("POST", "/v1/chat/completions", chatBody, hdr)
		readAll(t, res)
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("origin %s: ACAO %q, want %q", origin, got, want)
		}
		if !strings.Contains(strings.Join(res.Header.Values("Vary"), ","), "Origin") {
			t.Errorf("origin %s: no Vary: Origin", origin)
		}
	}
}

func TestProxy_LiveChanges(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if res := h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	// A second handle on the same file, as the CLI would open it.
	other, err := storeOpen(h.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := admin.New(other).DeleteUser(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	res := h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key))
	readAll(t, res)
	if res.StatusCode != 401 {
		t.Errorf("after delete by another handle: status %d, want 401", res.StatusCode)
	}
}
