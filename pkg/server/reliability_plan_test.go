package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/server"
)

// TestPLAN1_UsageRecordedExactlyOnce: 100 mixed requests (ok, stream, cut
// by the upstream, left by the client, 429) make exactly 100 usage rows,
// with the scripted token sums, the cut and left ones flagged partial, the
// 429s counted as errors; refused keys add nothing.
func TestPLAN1_UsageRecordedExactlyOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	kinds := []string{"ok", "sse", "cut", "abort", "429"}
	const perKind = 20
	// A key answered 429 rests (CONTRACT section 5): each 429 goes to a
	// provider of its own, so that every request still reaches an upstream.
	for i := range perKind {
		h.addProvider(fmt.Sprintf("s429-%d.test", i), "sk-upstream-429", h.upstream.URL)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	sem := make(chan struct{}, 10)
	for i := range perKind * len(kinds) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			kind := kinds[i%len(kinds)]
			body, mode := chatBody, "ok"
			switch kind {
			case "sse":
				body, mode = streamBody, "sse:3:5"
			case "cut":
				body, mode = streamBody, "cut:2"
			case "abort":
				body, mode = streamBody, "sse:50:20"
			case "429":
				mode = "status:429"
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header = relAuth(h.key, "X-Fake-Mode", mode)
			if kind == "429" {
				req.Header.Set("X-Host-Final", fmt.Sprintf("s429-%d.test", i/len(kinds)))
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- fmt.Sprintf("%s: %v", kind, err)
				return
			}
			defer res.Body.Close()
			if kind == "abort" {
				br := bufio.NewReader(res.Body)
				br.ReadString('\n')
				cancel()
				io.Copy(io.Discard, br)
				return
			}
			io.Copy(io.Discard, res.Body)
		}()
	}
	// Refused keys are not recorded.
	for range 5 {
		readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer("sk-cfw"+strings.Repeat("R", 45))))
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	total := int64(perKind * len(kinds))
	relWaitUsage(t, h, total, 20*time.Second)
	// flushUsage waits for every handler to return and closes the
	// recorder: a duplicate recorded until then is in the rows below, and
	// one that came later would be dropped, which is checked after them.
	h.flushUsage()
	rows := h.stats("")
	if len(rows) != 1 {
		t.Fatalf("stats = %+v", rows)
	}
	r := rows[0]
	withUsage := int64(2 * perKind) // ok and sse
	if r.Requests != total || r.Partial != 2*perKind || r.Errors != perKind ||
		r.PromptTokens != withUsage*fakeai.PromptTokens || r.CompletionTokens != withUsage*fakeai.CompletionTokens {
		t.Errorf("totals = %+v, want %d requests, %d partial, %d errors, %d/%d tokens",
			r, total, 2*perKind, perKind, withUsage*fakeai.PromptTokens, withUsage*fakeai.CompletionTokens)
	}
	if n := h.rec.Dropped(); n != 0 {
		t.Errorf("%d usage records came after every handler had returned (a duplicate, or one recorded late)", n)
	}
}

// TestPLAN2_InFlightStreamOutlivesExpiry: a stream started before its key
// expires runs to the end (the documented choice: expiry is checked when a
// request starts); the next request is refused.
func TestPLAN2_InFlightStreamOutlivesExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	var mu sync.Mutex
	now := time.Now()
	h.svc.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	exp, err := h.svc.ExpiryFrom("2s")
	if err != nil {
		t.Fatal(err)
	}
	key, err := h.svc.CreateUser(context.Background(), "temp", exp)
	if err != nil {
		t.Fatal(err)
	}
	res := h.do("POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + key, "X-Fake-Mode": "gated:3"})
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	br := bufio.NewReader(res.Body)
	br.ReadString('\n')
	mu.Lock()
	now = now.Add(3 * time.Second) // the key expires mid-stream
	mu.Unlock()
	h.fake.Gate <- struct{}{}
	h.fake.Gate <- struct{}{}
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream after expiry: err %v, tail %q; want it to finish", err, rest)
	}
	a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(key))
	relWantError(t, "after expiry", a.status, a.header, a.body, 401, "key_expired")
	// At the stored expiry instant itself the key is already expired
	// (server UTC; the store keeps the time at its own precision).
	users, err := h.svc.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var stored time.Time
	for _, u := range users {
		if u.Name == "temp" && u.ExpiresAt != nil {
			stored = *u.ExpiresAt
		}
	}
	if stored.IsZero() || stored.After(*exp.At) || exp.At.Sub(stored) > time.Second {
		t.Fatalf("stored expiry %v, asked %v", stored, exp.At)
	}
	mu.Lock()
	now = stored.Add(-time.Nanosecond)
	mu.Unlock()
	if a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(key)); a.status != 200 {
		t.Errorf("1 ns before expiry: %d", a.status)
	}
	mu.Lock()
	now = stored
	mu.Unlock()
	if a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(key)); a.status != 401 {
		t.Errorf("at expiry: %d, want 401", a.status)
	}
}

// TestPLAN3_SelfResetOnlyOwnKey: a reset acts on the caller's key only, a
// deleted or old key cannot reset, and a stream running on the old key is
// not cut by the reset.
func TestPLAN3_SelfResetOnlyOwnKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	bob := h.createUser("bob")
	gone := h.createUser("gone")
	if err := h.svc.DeleteUser(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	a := relSend(t, nil, "POST", h.proxy.URL+"/me/reset", "", relAuth(gone))
	relWantError(t, "deleted key", a.status, a.header, a.body, 401, "invalid_api_key")

	before := snapUsers(t, h)
	res := h.do("POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Fake-Mode": "gated:2"})
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	br.ReadString('\n')

	a = relSend(t, nil, "POST", h.proxy.URL+"/me/reset", "", relAuth(h.key, "Accept", "application/json"))
	var out struct{ Name, Key string }
	if err := json.Unmarshal([]byte(a.body), &out); a.status != 200 || err != nil || out.Name != "alice" {
		t.Fatalf("reset: %d %s", a.status, a.body)
	}
	after := snapUsers(t, h)
	for i := range before {
		if strings.HasPrefix(before[i], "bob ") && before[i] != after[i] {
			t.Errorf("alice's reset changed bob: %s → %s", before[i], after[i])
		}
	}
	if s := relSend(t, nil, "GET", h.proxy.URL+"/me", "", relAuth(bob)); s.status != 200 || !strings.Contains(s.body, `"name":"bob"`) {
		t.Errorf("bob after alice's reset: %d %s", s.status, s.body)
	}
	if s := relSend(t, nil, "POST", h.proxy.URL+"/me/reset", "", relAuth(h.key)); s.status != 401 {
		t.Errorf("reset with the old key: %d, want 401", s.status)
	}
	h.fake.Gate <- struct{}{}
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream on the old key after the reset: err %v tail %q", err, rest)
	}
}

// TestPLAN4_CORS: with the default settings the proxy and /me allow any
// origin without credentials, upstream Access-Control-* headers are
// replaced, and admin routes (preflights included) carry no CORS header;
// an allowlist never reflects another origin.
func TestPLAN4_CORS(t *testing.T) {
	t.Parallel()
	const token = "Plan4-Admin-Token-0123456789abcdef"
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: token}})
	relUpstream(t, h, "cors.test", "sk-cors-secret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Access-Control-Allow-Origin", "https://evil.example")
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		w.Header().Set("Access-Control-Allow-Headers", "*")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	}))
	preflight := func(origin string) http.Header {
		return relHdr("Origin", origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, x-stainless-lang")
	}
	noCORS := func(name string, hdr http.Header) {
		t.Helper()
		for k := range hdr {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("%s: admin answer carries %s: %q", name, k, hdr.Get(k))
			}
		}
	}
	for _, path := range []string{"/" + token + "/register/bob", "/" + token + "/users", "/admin/register/bob", "/admin/users", "/wrong/register/bob", "/nope"} {
		a := relSend(t, nil, "OPTIONS", h.proxy.URL+path, "", preflight("https://app.example"))
		noCORS("OPTIONS "+path, a.header)
		b := relSend(t, nil, "GET", h.proxy.URL+path, "", relHdr("Origin", "https://app.example", "Authorization", "Bearer "+token))
		noCORS("GET "+path, b.header)
	}
	for _, path := range []string{"/v1/chat/completions", "/me", "/me/reset", "/cors.test/v1/chat/completions"} {
		a := relSend(t, nil, "OPTIONS", h.proxy.URL+path, "", preflight("https://app.example"))
		if a.status != 204 || a.header.Get("Access-Control-Allow-Origin") != "*" || a.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("preflight %s: %d %v", path, a.status, a.header)
		}
	}
	a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "cors.test", "Origin", "https://app.example"))
	if got := a.header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "*" {
		t.Errorf("upstream ACAO replaced: got %v, want [*]", got)
	}
	if a.header.Get("Access-Control-Allow-Credentials") != "" || a.header.Get("Access-Control-Allow-Headers") != "" {
		t.Errorf("upstream CORS headers leaked through: %v", a.header)
	}

	h2 := newHarness(t, harnessOpts{server: server.Config{AccessToken: token, CORSOrigins: []string{"https://ok.example"}}})
	for _, origin := range []string{"https://evil.example", "https://ok.example.evil.example", "null", "https://OK.example", ""} {
		a := relSend(t, nil, "OPTIONS", h2.proxy.URL+"/v1/chat/completions", "", preflight(origin))
		if got := a.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("allowlist, origin %q: ACAO %q, want none", origin, got)
		}
	}
	a = relSend(t, nil, "OPTIONS", h2.proxy.URL+"/v1/chat/completions", "", preflight("https://ok.example"))
	if a.header.Get("Access-Control-Allow-Origin") != "https://ok.example" || !strings.Contains(strings.Join(a.header.Values("Vary"), ","), "Origin") {
		t.Errorf("allowlist, allowed origin: %v", a.header)
	}
	a = relSend(t, nil, "OPTIONS", h2.proxy.URL+"/"+token+"/users", "", preflight("https://ok.example"))
	noCORS("allowlist admin preflight", a.header)
}

// TestSUP2_NoDebugEndpoints: no pprof, expvar or metrics by default.
func TestSUP2_NoDebugEndpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: "Sup2-Admin-Token-0123456789abcdef"}})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/debug/pprof/heap", "/debug/pprof/cmdline", "/debug/vars", "/metrics", "/debug/requests"} {
		for _, hdr := range []http.Header{nil, relAuth(h.key)} {
			a := relSend(t, nil, "GET", h.proxy.URL+path, "", hdr)
			if a.status != 403 && a.status != 404 {
				t.Errorf("GET %s: %d, want 403 or 404", path, a.status)
			}
			if strings.Contains(a.body, "goroutine") || strings.Contains(a.body, "memstats") {
				t.Errorf("GET %s: debug output: %.200s", path, a.body)
			}
		}
	}

}
