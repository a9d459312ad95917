package server_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keyedUpstream answers each provider key with the status in statuses (200
// with a completion when absent) and records the keys it saw, in order,
// except on aiproxy's model-list probes (GET /v1/models), which it answers
// the same way but does not record.
type keyedUpstream struct {
	mu       sync.Mutex
	seen     []string
	statuses map[string]int
}

func (u *keyedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	u.mu.Lock()
	if r.URL.Path != "/v1/models" {
		u.seen = append(u.seen, key)
	}
	code := u.statuses[key]
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if code != 0 && code != 200 {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(code)
		io.WriteString(w, `{"error":{"message":"refused","type":"requests","code":"`+strconv.Itoa(code)+`"}}`)
		return
	}
	io.WriteString(w, `{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
}

func (u *keyedUpstream) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

func poolHarness(t *testing.T, statuses map[string]int, keys ...string) (*harness, *keyedUpstream) {
	h := newHarness(t, harnessOpts{})
	up := &keyedUpstream{statuses: statuses}
	srv := upstreamFunc(t, h, "pool.example", keys[0], up.ServeHTTP)
	for _, k := range keys[1:] {
		h.addProvider("pool.example", k, srv.URL)
	}
	return h, up
}

func poolDo(h *harness, body string) *http.Response {
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "pool.example"
	return h.do("POST", "/v1/chat/completions", body, hdr)
}

// A key answered 429 rests; the request goes to the next key at once,
// its body replayed, and later requests skip the resting key.
func TestKeyPool_RefusedKeyRestsAndRequestMovesOn(t *testing.T) {
	h, up := poolHarness(t, map[string]int{"sk-pool-key-limited-0001": 429}, "sk-pool-key-limited-0001", "sk-pool-key-healthy-0002")
	for i := range 4 {
		res := poolDo(h, chatBody)
		if body := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
		}
	}
	seen := up.take()
	limited := strings.Count(strings.Join(seen, " "), "limited")
	if limited > 1 || len(seen) > 5 {
		t.Errorf("upstream saw %v: the resting key was used again", seen)
	}
}

// With every key resting aiproxy answers 429 rate_limited itself, with
// Retry-After, and sends nothing upstream; with every key rejected, 502.
func TestKeyPool_AllKeysRestingOrRejected(t *testing.T) {
	for _, tc := range []struct {
		code       int
		wantStatus int
		wantCode   string
	}{
		{429, 429, "rate_limited"},
		{401, 502, "upstream_unreachable"},
		{403, 502, "upstream_unreachable"},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			h, up := poolHarness(t, map[string]int{"sk-pool-key-a-000001": tc.code, "sk-pool-key-b-000002": tc.code},
				"sk-pool-key-a-000001", "sk-pool-key-b-000002")
			res := poolDo(h, chatBody)
			readAll(t, res)
			if res.StatusCode != tc.code {
				t.Errorf("first request: %d, want the upstream's %d", res.StatusCode, tc.code)
			}
			if seen := up.take(); len(seen) != 2 {
				t.Errorf("first request tried %d keys, want each once", len(seen))
			}
			res = poolDo(h, chatBody)
			body := readAll(t, res)
			if res.StatusCode != tc.wantStatus || !strings.Contains(body, tc.wantCode) {
				t.Errorf("second request: %d %s", res.StatusCode, body)
			}
			if tc.code == 429 {
				if s, _ := strconv.Atoi(res.Header.Get("Retry-After")); s < 1 || s > 30 {
					t.Errorf("Retry-After %q", res.Header.Get("Retry-After"))
				}
			} else if !strings.Contains(body, "pool.example") {
				t.Errorf("502 does not name the host: %s", body)
			}
			if seen := up.take(); len(seen) != 0 {
				t.Errorf("upstream saw %d requests while every key rests", len(seen))
			}
		})
	}
}

// A provider with one key: the upstream's refusal comes back as it is,
// after exactly one upstream request (no hidden retry, STR-5).
func TestKeyPool_SingleKeyNoRetry(t *testing.T) {
	h, up := poolHarness(t, map[string]int{"sk-pool-key-only-00001": 429}, "sk-pool-key-only-00001")
	res := poolDo(h, chatBody)
	readAll(t, res)
	if res.StatusCode != 429 || len(up.take()) != 1 {
		t.Errorf("status %d", res.StatusCode)
	}
}

// A body that streamed through (multipart) is never replayed: the
// refusal goes back to the client.
func TestKeyPool_StreamedBodyNotReplayed(t *testing.T) {
	h, up := poolHarness(t, map[string]int{"sk-pool-key-a-000001": 429, "sk-pool-key-b-000002": 429},
		"sk-pool-key-a-000001", "sk-pool-key-b-000002")
	req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/audio/transcriptions", strings.NewReader("--x\r\n\r\nfile\r\n--x--\r\n"))
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("X-Host-Final", "pool.example")
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	if res.StatusCode != 429 || len(up.take()) != 1 {
		t.Errorf("status %d", res.StatusCode)
	}
}

// Key states live in the database, so that `provider list` in another
// process shows them; touching the provider makes every key usable again.
func TestKeyPool_StatesStoredAndResetByTouch(t *testing.T) {
	h, up := poolHarness(t, map[string]int{"sk-pool-key-a-000001": 401, "sk-pool-key-b-000002": 429},
		"sk-pool-key-a-000001", "sk-pool-key-b-000002")
	readAll(t, poolDo(h, chatBody))
	up.take()
	states := func() map[string]string {
		ps, err := h.svc.ListProviders(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, p := range ps {
			if p.Host == "pool.example" {
				for _, ks := range p.KeyStates {
					m[ks.Hint] = ks.State
					if (ks.State == "resting") != (ks.Until != nil) {
						t.Errorf("%s: state %s until %v", ks.Hint, ks.State, ks.Until)
					}
				}
			}
		}
		return m
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := states()
		var got []string
		for _, s := range m {
			got = append(got, s)
		}
		sort.Strings(got)
		if strings.Join(got, ",") == "rejected,resting" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored states %v, want one rejected and one resting", m)
		}
		time.Sleep(10 * time.Millisecond) // polling the database for the async write
	}
	// A touch (here: inject_usage set) makes both usable again.
	if err := h.svc.SetProviderInjectUsage(context.Background(), "pool.example", true); err != nil {
		t.Fatal(err)
	}
	for _, s := range states() {
		if s != "ok" {
			t.Errorf("after a touch: %v", states())
			break
		}
	}
	readAll(t, poolDo(h, chatBody))
	if seen := up.take(); len(seen) == 0 {
		t.Error("after a touch the keys were not tried again")
	}
}

// A 401 or 403 that the provider's model list does not confirm is about the
// request (a model or endpoint the account may not use), not the key: the
// key stays in service, so that no user can take every key out with one
// forbidden request.
func TestKeyPool_ForbiddenRequestDoesNotRejectKeys(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var models atomic.Int32
	srv := upstreamFunc(t, h, "perm.example", "sk-pool-perm-key-0001", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			models.Add(1)
			io.WriteString(w, `{"data":[]}`)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","code":null}}`)
	})
	h.addProvider("perm.example", "sk-pool-perm-key-0002", srv.URL)
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "perm.example"
	for range 3 {
		res := h.do("POST", "/v1/chat/completions", chatBody, hdr)
		if readAll(t, res); res.StatusCode != 403 {
			t.Fatalf("status %d, want the upstream's 403 each time", res.StatusCode)
		}
	}
	if models.Load() == 0 {
		t.Error("the keys were never checked against the model list")
	}
}
