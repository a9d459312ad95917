package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/fakeai"
)

func wantTotals(t *testing.T, rows []aiproxy.StatsRow, requests, prompt, completion int64) {
	t.Helper()
	if len(rows) != 1 {
		t.Fatalf("stats rows = %+v, want one totals row", rows)
	}
	r := rows[0]
	if r.Requests != requests || r.PromptTokens != prompt || r.CompletionTokens != completion || r.TotalTokens != prompt+completion {
		t.Errorf("totals = %+v, want %d requests, %d prompt, %d completion tokens", r, requests, prompt, completion)
	}
}

// TestUsage_StreamClientSeesExactStream: whether or not the client asked
// for usage, it receives exactly what the upstream would have sent it, and
// the tokens are recorded either way (PLAN-1).
func TestUsage_StreamClientSeesExactStream(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		body string
		want string
	}{
		{"client did not ask", streamBody, fakeai.Chunk("gpt-4o-mini", 0) + fakeai.Chunk("gpt-4o-mini", 1) + "data: [DONE]\n\n"},
		{"client asked", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			fakeai.Chunk("gpt-4o-mini", 0) + fakeai.Chunk("gpt-4o-mini", 1) + fakeai.UsageChunk("gpt-4o-mini") + "data: [DONE]\n\n"},
		{"gzip upstream", streamBody, fakeai.Chunk("gpt-4o-mini", 0) + fakeai.Chunk("gpt-4o-mini", 1) + "data: [DONE]\n\n"},
		{"curl -d form type", streamBody, fakeai.Chunk("gpt-4o-mini", 0) + fakeai.Chunk("gpt-4o-mini", 1) + "data: [DONE]\n\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			hdr := bearer(h.key)
			hdr["X-Fake-Mode"] = "sse:2:0"
			if tc.name == "gzip upstream" {
				hdr["X-Fake-Mode"] = "gzip:2:0"
				hdr["Accept-Encoding"] = "gzip"
			}
			if tc.name == "curl -d form type" {
				hdr["Content-Type"] = "application/x-www-form-urlencoded"
			}
			res := h.do("POST", "/v1/chat/completions", tc.body, hdr)
			got := readAll(t, res)
			if tc.name == "gzip upstream" && res.Header.Get("Content-Encoding") == "gzip" {
				t.Fatalf("client got a gzip body it must decode itself; want it decoded by the proxy")
			}
			if got != tc.want {
				t.Errorf("client stream:\n%q\nwant:\n%q", got, tc.want)
			}
			h.flushUsage()
			wantTotals(t, h.stats(""), 1, fakeai.PromptTokens, fakeai.CompletionTokens)
		})
	}
}

func TestUsage_NonStreamAndStats(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	bob := h.createUser("bob")
	for i := 0; i < 3; i++ {
		readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)))
	}
	readAll(t, h.do("POST", "/v1/chat/completions", `{"model":"other-model","messages":[]}`, bearer(bob)))
	hdr := bearer(bob)
	hdr["X-Fake-Mode"] = "status:500"
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, hdr))
	// A refused key is not recorded.
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer("sk-cfw"+strings.Repeat("z", 45))))
	h.flushUsage()

	rows := h.stats("user")
	if len(rows) != 2 || rows[0].Key != "alice" || rows[0].Requests != 3 || rows[0].PromptTokens != 3*fakeai.PromptTokens ||
		rows[1].Key != "bob" || rows[1].Requests != 2 || rows[1].Errors != 1 {
		t.Errorf("by user = %+v", rows)
	}
	rows = h.stats("model")
	if len(rows) != 2 || rows[0].Key != "gpt-4o-mini" || rows[0].Requests != 4 || rows[1].Key != "other-model" {
		t.Errorf("by model = %+v", rows)
	}
	rows = h.stats("day")
	if len(rows) != 1 || rows[0].Key != time.Now().UTC().Format(time.DateOnly) || rows[0].Requests != 5 {
		t.Errorf("by day = %+v", rows)
	}
	rows, err := h.svc.Stats(context.Background(), admin.StatsQuery{Since: "2099-01-01"})
	if err != nil || len(rows) != 1 || rows[0].Requests != 0 {
		t.Errorf("since the future = %+v, %v", rows, err)
	}
	users, _ := h.svc.ListUsers(context.Background())
	if users[0].Requests != 3 || users[0].LastUsedAt == nil {
		t.Errorf("user list = %+v, want alice with 3 requests and a last use", users[0])
	}
}

// TestUsage_PartialStreams: a stream cut by the upstream or left by the
// client is recorded once, flagged partial.
func TestUsage_PartialStreams(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	hdr := bearer(h.key)
	hdr["X-Fake-Mode"] = "cut:2"
	res := h.do("POST", "/v1/chat/completions", streamBody, hdr)
	res.Body.Close()
	<-h.fake.Done
	h.flushUsage()
	rows := h.stats("")
	if rows[0].Requests != 1 || rows[0].Partial != 1 {
		t.Errorf("stats = %+v, want 1 partial request", rows)
	}
}

// TestUsage_ConcurrentAllCounted: 200 concurrent requests, then a flush as
// at shutdown: every one is recorded.
func TestUsage_ConcurrentAllCounted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body, mode := chatBody, "ok"
			if i%2 == 1 {
				body, mode = streamBody, "sse:3:0"
			}
			req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+h.key)
			req.Header.Set("X-Fake-Mode", mode)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			readAllErr(res)
			if res.StatusCode != 200 {
				errs <- fmt.Errorf("status %d", res.StatusCode)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h.flushUsage()
	wantTotals(t, h.stats(""), 200, 200*fakeai.PromptTokens, 200*fakeai.CompletionTokens)
}

func readAllErr(res *http.Response) string {
	defer res.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

// TestExpiry: an expired key gets 401 key_expired naming when (PLAN-2).
func TestExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	now := time.Now()
	h.svc.Now = func() time.Time { return now }
	exp, err := h.svc.ExpiryFrom("2s")
	if err != nil {
		t.Fatal(err)
	}
	key, err := h.svc.CreateUser(context.Background(), "temp", exp)
	if err != nil {
		t.Fatal(err)
	}
	if res := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)); res.StatusCode != 200 {
		t.Fatalf("before expiry: %d", res.StatusCode)
	}
	now = now.Add(3 * time.Second) // the clock moves; the cached key is checked again
	res := h.do("POST", "/v1/chat/completions", chatBody, bearer(key))
	body := readAll(t, res)
	var e struct {
		Error struct{ Code, Message string }
	}
	json.Unmarshal([]byte(body), &e)
	if res.StatusCode != 401 || e.Error.Code != "key_expired" || !strings.Contains(e.Error.Message, exp.At.Format(time.RFC3339)) {
		t.Errorf("after expiry: %d %s, want 401 key_expired naming %s", res.StatusCode, body, exp.At.Format(time.RFC3339))
	}
	// /me refuses it too, and so does a self-reset.
	if res := h.do("GET", "/me", "", bearer(key)); res.StatusCode != 401 {
		t.Errorf("/me with an expired key: %d", res.StatusCode)
	}
	if res := h.do("POST", "/me/reset", "", bearer(key)); res.StatusCode != 401 {
		t.Errorf("/me/reset with an expired key: %d", res.StatusCode)
	}
}

// TestSelfService: GET /me and POST /me/reset (PLAN-3).
func TestSelfService(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)))
	h.flushUsage()
	res := h.do("GET", "/me", "", bearer(h.key))
	body := readAll(t, res)
	var me struct {
		Name      string  `json:"name"`
		KeyHint   string  `json:"key_hint"`
		ExpiresAt *string `json:"expires_at"`
		Usage     struct {
			Requests, PromptTokens, CompletionTokens, TotalTokens int64
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &me); err != nil || res.StatusCode != 200 {
		t.Fatalf("/me: %d %s", res.StatusCode, body)
	}
	if me.Name != "alice" || me.Usage.Requests != 1 || strings.Contains(body, h.key) || !strings.Contains(body, `"prompt_tokens":11`) {
		t.Errorf("/me = %s", body)
	}
	if res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("/me has no CORS header")
	}

	// 20 concurrent resets with the same key: exactly one wins.
	var wg sync.WaitGroup
	keys := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", h.proxy.URL+"/me/reset", nil)
			req.Header.Set("Authorization", "Bearer "+h.key)
			req.Header.Set("Accept", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			b := readAllErr(res)
			if res.StatusCode == 200 {
				var out struct{ Name, Key string }
				json.Unmarshal([]byte(b), &out)
				keys <- out.Key
			}
		}()
	}
	wg.Wait()
	close(keys)
	var won []string
	for k := range keys {
		won = append(won, k)
	}
	if len(won) != 1 {
		t.Fatalf("%d resets succeeded, want exactly 1", len(won))
	}
	if res := h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)); res.StatusCode != 401 {
		t.Errorf("old key after reset: %d, want 401", res.StatusCode)
	}
	if res := h.do("POST", "/v1/chat/completions", chatBody, bearer(won[0])); res.StatusCode != 200 {
		t.Errorf("new key after reset: %d, want 200", res.StatusCode)
	}
	// A second reset moments later is throttled.
	res = h.do("POST", "/me/reset", "", bearer(won[0]))
	if b := readAll(t, res); res.StatusCode != 429 || res.Header.Get("Retry-After") == "" || !strings.Contains(b, "rate_limited") {
		t.Errorf("second reset: %d %q, want 429 rate_limited with Retry-After", res.StatusCode, b)
	}
	// Plain-text answer by default.
	res = h.do("POST", "/me/reset", "", bearer(h.createUser("bob")))
	if b := readAll(t, res); res.StatusCode != 200 || !strings.HasPrefix(b, "sk-cfw") || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("plain reset: %d %q", res.StatusCode, b)
	}
}
