package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

func setLimits(t *testing.T, h *harness, name string, kv ...string) {
	t.Helper()
	var up admin.LimitsUpdate
	for i := 0; i < len(kv); i += 2 {
		up.Changes = append(up.Changes, admin.LimitChange{Field: kv[i], Value: kv[i+1]})
	}
	if _, err := h.svc.SetLimits(context.Background(), name, up); err != nil {
		t.Fatal(err)
	}
}

// heldUpstream answers a chat completion only once release is closed, and
// counts the requests that reached it.
type heldUpstream struct {
	arrived atomic.Int32
	release chan struct{}
}

func (u *heldUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	u.arrived.Add(1)
	select {
	case <-u.release:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`)
}

// 100 parallel requests that each name max_tokens, against a token budget
// that covers 10, let through at most 10 while they are all in flight;
// nothing refused reaches the upstream, and each refusal is
// insufficient_quota with x-should-retry: false.
func TestLimits_BudgetHoldsUnderConcurrency(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	up := &heldUpstream{release: make(chan struct{})}
	upstreamFunc(t, h, "held.example", "sk-upstream-held-000001", up.ServeHTTP)
	// Each request reserves its prompt estimate (body/4) + 100 output tokens.
	body := `{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	per := int64(len(body)/4 + 100)
	setLimits(t, h, "alice", "tokens", strconv.FormatInt(10*per, 10)+"/day")
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "held.example"
	var ok, quota atomic.Int32
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := h.do("POST", "/v1/chat/completions", body, hdr)
			b := readAll(t, res)
			switch {
			case res.StatusCode == 200:
				ok.Add(1)
			case res.StatusCode == 429 && strings.Contains(b, `"insufficient_quota"`) && res.Header.Get("X-Should-Retry") == "false":
				quota.Add(1)
			default:
				t.Errorf("status %d %s", res.StatusCode, b)
			}
		}()
	}
	// Wait until every request is either refused or held at the upstream.
	deadline := time.Now().Add(20 * time.Second)
	for quota.Load()+up.arrived.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling two counters under a deadline
	}
	if n := up.arrived.Load(); n != 10 {
		t.Errorf("%d requests reached the upstream at once, want exactly the 10 the budget covers", n)
	}
	close(up.release)
	wg.Wait()
	if ok.Load() != up.arrived.Load() || ok.Load()+quota.Load() != 100 {
		t.Errorf("%d answered, %d refused, %d reached the upstream", ok.Load(), quota.Load(), up.arrived.Load())
	}
	// Settled at 18 tokens each, the budget has room again: sequential
	// requests fill it up to the last one that fits.
	h.inflight.Wait()
	want, used := 0, int64(10*18)
	for ; used+per <= 10*per; used += 18 {
		want++
	}
	more := 0
	for range 100 {
		res := h.do("POST", "/v1/chat/completions", body, hdr)
		readAll(t, res)
		h.inflight.Wait() // settled before the next one reserves
		if res.StatusCode != 200 {
			break
		}
		more++
	}
	if more != want {
		t.Errorf("after settling, %d more requests fit, want %d", more, want)
	}
}

// A limited user's answers carry OpenAI's x-ratelimit-* headers (aiproxy's,
// not the upstream's); GET /me shows the limits with what is used.
func TestLimits_HeadersAndMe(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	setLimits(t, h, "alice", "rpm", "5", "tpm", "100000")
	res := h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key))
	readAll(t, res)
	if res.StatusCode != 200 || res.Header.Get("X-Ratelimit-Limit-Requests") != "5" || res.Header.Get("X-Ratelimit-Remaining-Requests") != "4" ||
		res.Header.Get("X-Ratelimit-Limit-Tokens") != "100000" || res.Header.Get("X-Ratelimit-Reset-Requests") == "" {
		t.Errorf("status %d headers %v", res.StatusCode, res.Header)
	}
	h.flushUsage()
	res = h.do("GET", "/me", "", bearer(h.key))
	var me struct {
		Limits struct {
			RPM *int64 `json:"rpm"`
		} `json:"limits"`
	}
	if err := json.Unmarshal([]byte(readAll(t, res)), &me); err != nil || me.Limits.RPM == nil || *me.Limits.RPM != 5 {
		t.Errorf("/me limits: %+v %v", me, err)
	}
}

// Over --rpm: 429 rate_limit_exceeded with Retry-After; a model outside
// --models: 403 model_not_allowed, and /v1/models-style filtering follows.
func TestLimits_RateAndModelRefusals(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	setLimits(t, h, "alice", "rpm", "1", "models", "gpt-4o*")
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)))
	res := h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key))
	if b := readAll(t, res); res.StatusCode != 429 || !strings.Contains(b, "rate_limit_exceeded") || res.Header.Get("Retry-After") == "" {
		t.Errorf("over rpm: %d %s %v", res.StatusCode, b, res.Header)
	}
	res = h.do("POST", "/v1/chat/completions", `{"model":"o3","messages":[]}`, bearer(h.key))
	if b := readAll(t, res); res.StatusCode != 403 || !strings.Contains(b, "model_not_allowed") {
		t.Errorf("model not allowed: %d %s", res.StatusCode, b)
	}
	if n := h.fake.Count(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

// A spend limit admits only priced models: an unpriced one gets 403
// model_not_priced naming `aiproxy price set`; a priced one is charged
// its cost, which stats show.
func TestLimits_SpendNeedsPrices(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	setLimits(t, h, "alice", "spend", "5/month")
	res := h.do("POST", "/v1/chat/completions", `{"model":"my-own-model","messages":[]}`, bearer(h.key))
	if b := readAll(t, res); res.StatusCode != 403 || !strings.Contains(b, "model_not_priced") || !strings.Contains(b, "aiproxy price set") {
		t.Errorf("unpriced: %d %s", res.StatusCode, b)
	}
	res = h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)) // gpt-4o-mini: priced
	if b := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("priced: %d %s", res.StatusCode, b)
	}
	h.flushUsage()
	rows := h.stats("")
	if len(rows) != 1 || rows[0].CostUSD == nil || *rows[0].CostUSD <= 0 {
		t.Errorf("stats = %+v, want a cost", rows)
	}
}

// The official openai-go SDK does not retry a spent budget
// (x-should-retry: false), and does retry a rate limit after Retry-After.
func TestLimits_OpenAISDKRetriesOnlyRateLimits(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	setLimits(t, h, "alice", "tokens", "1/total")
	client := openai.NewClient(option.WithAPIKey(h.key), option.WithBaseURL(h.proxy.URL+"/v1/"), option.WithMaxRetries(3))
	params := openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	_, err := client.Chat.Completions.New(context.Background(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "insufficient_quota" {
		t.Fatalf("err = %v", err)
	}
	h.inflight.Wait()
	if n := strings.Count(h.logs.String(), `"user":"alice"`); n != 1 {
		t.Errorf("the SDK sent %d requests for a spent budget, want 1 (no retry)", n)
	}

	// One request of bob's is held at the upstream while his second is
	// over --concurrent 1: 429 with Retry-After, which the SDK waits out
	// and retries; the held one is released as the refusal arrives.
	bob := h.createUser("bob")
	setLimits(t, h, "bob", "concurrent", "1")
	up := &heldUpstream{release: make(chan struct{})}
	upstreamFunc(t, h, "held.example", "sk-upstream-held-000001", up.ServeHTTP)
	opts := []option.RequestOption{option.WithAPIKey(bob), option.WithBaseURL(h.proxy.URL + "/v1/"), option.WithMaxRetries(2),
		option.WithHeader("X-Host-Final", "held.example")}
	cb := openai.NewClient(opts...)
	first := make(chan error, 1)
	go func() { _, err := cb.Chat.Completions.New(context.Background(), params); first <- err }()
	for up.arrived.Load() == 0 {
		time.Sleep(time.Millisecond) // polling: the first request is held
	}
	refused := make(chan struct{})
	var once sync.Once
	cb2 := openai.NewClient(append(opts, option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		res, err := next(r)
		if err == nil && res.StatusCode == 429 {
			once.Do(func() { close(refused); close(up.release) })
		}
		return res, err
	}))...)
	if _, err := cb2.Chat.Completions.New(context.Background(), params); err != nil {
		t.Fatalf("the retried request failed: %v", err)
	}
	select {
	case <-refused:
	default:
		t.Error("the second request was never refused")
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := up.arrived.Load(); n != 2 {
		t.Errorf("upstream saw %d of bob's requests, want 2 (the held one and the retry)", n)
	}
}

// The billing routes NextChat-style apps read answer from the caller's
// spend limit and usage, in OpenAI's old shapes (cents for usage).
func TestBilling_SubscriptionAndUsage(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	setLimits(t, h, "alice", "spend", "5/month")
	readAll(t, h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key)))
	h.flushUsage()
	var sub struct {
		Object       string  `json:"object"`
		HardLimitUSD float64 `json:"hard_limit_usd"`
		AccessUntil  int64   `json:"access_until"`
	}
	res := h.do("GET", "/dashboard/billing/subscription", "", bearer(h.key))
	if err := json.Unmarshal([]byte(readAll(t, res)), &sub); err != nil || sub.Object != "billing_subscription" || sub.HardLimitUSD != 5 {
		t.Errorf("subscription: %d %+v %v", res.StatusCode, sub, err)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	for _, tc := range []struct {
		query    string
		positive bool
	}{{"?start_date=" + today + "&end_date=" + tomorrow, true}, {"?start_date=" + today + "&end_date=" + today, false}} {
		var u struct {
			Object     string  `json:"object"`
			TotalUsage float64 `json:"total_usage"`
		}
		res := h.do("GET", "/v1/dashboard/billing/usage"+tc.query, "", bearer(h.key))
		if err := json.Unmarshal([]byte(readAll(t, res)), &u); err != nil || u.Object != "list" || (u.TotalUsage > 0) != tc.positive {
			t.Errorf("usage%s: %d %+v %v", tc.query, res.StatusCode, u, err)
		}
	}
	if res := h.do("GET", "/dashboard/billing/subscription", "", nil); readAll(t, res) == "" || res.StatusCode != 401 {
		t.Errorf("no key: %d", res.StatusCode)
	}
}

// Leaving "model" out is no way around a budget: a JSON POST without one
// is reserved the default and charged like any other.
func TestLimits_NoModelStillCharged(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true, proxy: proxy.Config{}})
	setLimits(t, h, "alice", "tokens", "5000/day")
	body := `{"messages":[{"role":"user","content":"hi"}]}`
	var ok int
	for range 10 {
		res := h.do("POST", "/v1/chat/completions", body, bearer(h.key))
		readAll(t, res)
		h.inflight.Wait()
		if res.StatusCode == 200 {
			ok++
		}
	}
	// Each request reserves the default 4096 output tokens: one fits in 5000
	// at a time, and each is charged its usage (18 tokens) after.
	h.flushUsage()
	charged := chargedTokens(t, h)
	if ok == 0 || charged != int64(ok)*18 {
		t.Errorf("%d requests let through, %d tokens charged; want each charged 18", ok, charged)
	}
}

// A request that went upstream and was cut short — the client leaving
// before the answer began, or during a stream — is charged its
// reservation, not released: the provider may bill it whole.
func TestLimits_ClientLeavingIsCharged(t *testing.T) {
	h := newHarness(t, harnessOpts{limits: true})
	up := &heldUpstream{release: make(chan struct{})}
	upstreamFunc(t, h, "held.example", "sk-upstream-held-000001", up.ServeHTTP)
	setLimits(t, h, "alice", "tokens", "100000/day")
	body := `{"model":"gpt-4o-mini","max_tokens":1000,"messages":[]}`
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("X-Host-Final", "held.example")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	for up.arrived.Load() == 0 {
		time.Sleep(time.Millisecond) // polling: the request is at the upstream
	}
	cancel()
	<-done
	h.inflight.Wait() // the proxy saw the client leave and ended the request
	close(up.release)
	h.flushUsage()
	charged := chargedTokens(t, h)
	if want := int64(len(body)/4 + 1000); charged != want {
		t.Errorf("charged %d tokens for a request the client left, want its reservation %d", charged, want)
	}
}

// chargedTokens is what every user was charged against token budgets today.
func chargedTokens(t *testing.T, h *harness) int64 {
	t.Helper()
	m, err := h.db.ChargedSince(context.Background(), time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range m {
		n += c.Tokens
	}
	return n
}
