package limits_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/storetest"
)

// t0 is a Wednesday, on a whole second.
var t0 = time.Date(2026, 3, 18, 12, 0, 0, 0, time.UTC)

// clock is an injected clock that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     testing.TB
	path  string
	db    *store.DB
	clock *clock
}

// The limiter's tests run against SQLite, with the counters in memory, and
// with AIPROXY_TEST_STORE=postgres against PostgreSQL with the counters in
// the database (store.Ledger), as serve keeps them there: the same
// promises hold for both.
//
//	AIPROXY_TEST_STORE=postgres go test ./pkg/limits
func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	storetest.Cleanup()
	os.Exit(code)
}

var testPostgres = os.Getenv("AIPROXY_TEST_STORE") == "postgres"

// testSecret is the secret of a PostgreSQL store (base64 of 32 bytes).
const testSecret = "bGltaXRzIHRlc3Qgc2VjcmV0IGtleSwgMzIgYnl0ZXM="

func newEnv(t testing.TB) *env {
	t.Helper()
	var path string
	if testPostgres {
		path = pgtest.NewDatabase(t)
	} else {
		path = storetest.NewFile(t)
	}
	return &env{t: t, path: path, db: open(t, path), clock: &clock{t: t0}}
}

func open(t testing.TB, path string) *store.DB {
	t.Helper()
	var opts []store.Option
	if store.IsPostgres(path) {
		opts = append(opts, store.WithSecretKey(testSecret, "AIPROXY_SECRET_KEY"))
	}
	d, err := store.Open(t.Context(), path, opts...)
	if err != nil {
		t.Fatalf("Open(%q) error = %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// user creates user name and returns its id.
func (e *env) user(name string) int64 {
	e.t.Helper()
	ctx := e.t.Context()
	if err := e.db.CreateUser(ctx, name, "hash-"+name, "hint", t0, nil); err != nil {
		e.t.Fatal(err)
	}
	u, err := e.db.UserByName(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return u.ID
}

// limit sets name's limits from flag values ("rpm", "60", …).
func (e *env) limit(name string, kv ...string) {
	e.t.Helper()
	err := e.db.UpdateLimits(e.t.Context(), name, t0, func(*aiproxy.Limits) (*aiproxy.Limits, error) {
		l := &aiproxy.Limits{}
		for i := 0; i < len(kv); i += 2 {
			if err := l.Set(kv[i], kv[i+1]); err != nil {
				return nil, err
			}
		}
		return l, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.request()
}

// request does what every proxied request does first: look its user up,
// which reads the change counter that LimitsVersion then reports.
func (e *env) request() {
	e.db.UserByKeyHash(context.Background(), "no-such-key")
}

// limiter is a serve's limiter: on PostgreSQL, with its counters in the
// database, as one instance of several.
func (e *env) limiter(opts ...limits.Option) *limits.Limiter {
	e.t.Helper()
	if ld := e.db.NewLedger(0); ld != nil {
		e.t.Cleanup(ld.Close)
		opts = append(opts, limits.WithLedger(ld))
	}
	e.request()
	l, err := limits.New(e.t.Context(), e.db, e.clock.Now, opts...)
	if err != nil {
		e.t.Fatalf("limits.New() error = %v", err)
	}
	return l
}

func ptr[T any](v T) *T { return &v }

var gpt = &aiproxy.Price{Model: "gpt-4o", Input: 2.5, Output: 10}

func code(err error) string { return aiproxy.ErrorCode(err) }

func TestReserve_UserWithoutLimitsGetsNilWithoutAllocating(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process's allocations.
	e := newEnv(t)
	id := e.user("alice")
	limited := e.user("bob")
	e.limit("bob", "rpm", "1000")
	l := e.limiter()
	req := limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 100, MaxOutputTokens: 100, Price: gpt}
	r, err := l.Reserve(req)
	if r != nil || err != nil {
		t.Fatalf("Reserve(unlimited) = %v, %v; want nil, nil", r, err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		r, _ := l.Reserve(req)
		r.Settle(ptr[int64](1), ptr[int64](1), nil, nil)
		r.Release()
		r.Headers(nil)
	})
	if allocs != 0 {
		t.Errorf("Reserve+Settle for a user without limits: %v allocations, want 0", allocs)
	}
	if r, err := l.Reserve(limits.Request{UserID: limited}); r == nil || err != nil {
		t.Errorf("Reserve(limited) = %v, %v; want a reservation", r, err)
	}
}

// TestReserve_HundredConcurrentRequestsNeverOverspend: 100 goroutines each
// reserve max_tokens against a budget that covers 10: exactly 10 get
// through, whatever the interleaving; and the same for a spend budget.
func TestReserve_HundredConcurrentRequestsNeverOverspend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		limit []string
	}{
		// prompt 100 + max 900 = 1000 tokens a request.
		{"tokens", []string{"tokens", "10000/day"}},
		// 100 × $2.5 + 900 × $10 per 1M = $0.00925 a request.
		{"spend", []string{"spend", "0.0925/month"}},
		{"concurrent", []string{"concurrent", "10"}},
		{"tpm", []string{"tpm", "10000"}},
		{"rpm", []string{"rpm", "10"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			id := e.user("alice")
			e.limit("alice", tc.limit...)
			l := e.limiter()
			var ok, refused atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 100, MaxOutputTokens: 900, Price: gpt})
					switch {
					case err == nil && r != nil:
						ok.Add(1)
					case code(err) == aiproxy.EQUOTA || code(err) == aiproxy.ELIMIT:
						refused.Add(1)
					default:
						t.Errorf("Reserve() = %v, %v", r, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if ok.Load() != 10 || refused.Load() != 90 {
				t.Errorf("%d reserved, %d refused; want 10 and 90", ok.Load(), refused.Load())
			}
		})
	}
}

// TestReserve_SequentialRequestsFillTheBudgetToTheLastThatFits: requests
// that use less than they reserve leave room for more, up to the last one
// whose reservation still fits; then the budget refuses.
func TestReserve_SequentialRequestsFillTheBudgetToTheLastThatFits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "10000/day")
	l := e.limiter()
	// Each reserves 1000 and uses 300: after n requests, 300n are used,
	// and one more fits while 300n + 1000 <= 10000, that is n <= 30.
	n := 0
	for ; n < 100; n++ {
		r, err := l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 900})
		if err != nil {
			if code(err) != aiproxy.EQUOTA {
				t.Fatalf("request %d: Reserve() error = %v, want EQUOTA", n+1, err)
			}
			break
		}
		r.Settle(ptr[int64](100), ptr[int64](200), nil, nil)
	}
	if n != 31 {
		t.Errorf("%d requests got through, want 31 (used 9300 of 10000, then 9300+1000 > 10000)", n)
	}
	// What is left (700) still fits a smaller request.
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 600}); err != nil {
		t.Errorf("a request of 700 tokens with 700 left: %v, want it reserved", err)
	}
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 0, MaxOutputTokens: 1}); code(err) != aiproxy.EQUOTA {
		t.Errorf("a request of 1 token with 0 left: %v, want EQUOTA", err)
	}
}

func TestReserve_ModelAllowList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "models", "gpt-4o*, groq/llama-*")
	l := e.limiter()
	tests := []struct {
		model string
		ok    bool
	}{
		{"gpt-4o", true},
		{"gpt-4o-mini", true},
		{"groq/llama-3.3-70b", true},
		{"GPT-4o", false}, // case-sensitive
		{"gpt-4", false},
		{"o1", false},
		{"llama-3.3-70b", false},
	}
	for _, tc := range tests {
		r, err := l.Reserve(limits.Request{UserID: id, Model: tc.model})
		if tc.ok && err != nil || !tc.ok && code(err) != aiproxy.EMODEL {
			t.Errorf("Reserve(model %q) error = %v, want allowed %v", tc.model, err, tc.ok)
		}
		r.Release()
		if got := l.ModelAllowed(id, tc.model); got != tc.ok {
			t.Errorf("ModelAllowed(%q) = %v, want %v", tc.model, got, tc.ok)
		}
	}
	if !l.ModelAllowed(e.user("bob"), "anything") {
		t.Errorf("ModelAllowed for a user without an allow-list = false, want true")
	}
}

func TestReserve_SpendLimitRefusesAnUnpricedModel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "spend", "5/month")
	l := e.limiter()
	_, err := l.Reserve(limits.Request{UserID: id, Model: "my-local-model", MaxOutputTokens: 10})
	if code(err) != aiproxy.ENOTPRICED || !strings.Contains(err.Error(), "aiproxy price set my-local-model") {
		t.Errorf("Reserve(unpriced model) error = %v, want ENOTPRICED naming aiproxy price set", err)
	}
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 10, Price: gpt}); err != nil {
		t.Errorf("Reserve(priced model) error = %v", err)
	}
}

func TestReserve_RPMIsASlidingMinute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "rpm", "3")
	l := e.limiter()
	for i := range 3 {
		r, err := l.Reserve(limits.Request{UserID: id})
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		h := http.Header{}
		r.Headers(h)
		want := http.Header{
			"X-Ratelimit-Limit-Requests":     {"3"},
			"X-Ratelimit-Remaining-Requests": {[]string{"2", "1", "0"}[i]},
			"X-Ratelimit-Reset-Requests":     {[]string{"1m0s", "50s", "40s"}[i]},
		}
		if diff := cmp.Diff(want, h); diff != "" {
			t.Errorf("request %d headers (-want +got):\n%s", i+1, diff)
		}
		r.Settle(nil, nil, nil, nil)
		e.clock.Add(10 * time.Second)
	}
	// At 30 s: the first request leaves the window at 60 s.
	_, err := l.Reserve(limits.Request{UserID: id})
	if code(err) != aiproxy.ELIMIT || limits.RetryAfter(err) != 30*time.Second {
		t.Fatalf("4th request at 30 s: %v, Retry-After %v; want ELIMIT and 30s", err, limits.RetryAfter(err))
	}
	h := http.Header{}
	limits.Headers(err, h)
	if h.Get("Retry-After") != "30" || h.Get("X-Ratelimit-Remaining-Requests") != "0" || h.Get("x-should-retry") != "" {
		t.Errorf("refusal headers = %v, want Retry-After 30, remaining 0, no x-should-retry", h)
	}
	e.clock.Add(30 * time.Second)
	if _, err := l.Reserve(limits.Request{UserID: id}); err != nil {
		t.Errorf("request at 60 s, after the first left the window: %v", err)
	}
}

func TestReserve_TPMCountsTotalTokensOverASlidingMinute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tpm", "1000")
	l := e.limiter()
	r, err := l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 500})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	r.Headers(h)
	if h.Get("x-ratelimit-remaining-tokens") != "400" || h.Get("x-ratelimit-limit-tokens") != "1000" || h.Get("x-ratelimit-limit-requests") != "" {
		t.Errorf("headers = %v, want tokens 1000 with 400 remaining, and no -requests trio (no --rpm)", h)
	}
	// The 600 reserved block another 600 until settled at 150.
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 500}); code(err) != aiproxy.ELIMIT {
		t.Fatalf("second request while 600 are held: %v, want ELIMIT", err)
	}
	r.Settle(ptr[int64](100), ptr[int64](50), nil, nil)
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 500}); err != nil {
		t.Errorf("second request after settling at 150: %v", err)
	}
	_, err = l.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 5000})
	if code(err) != aiproxy.ELIMIT || !strings.Contains(err.Error(), "lower max_tokens") {
		t.Errorf("a request larger than the whole tpm: %v, want ELIMIT saying to lower max_tokens", err)
	}
}

func TestReserve_ConcurrentCountsRequestsInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "concurrent", "2")
	l := e.limiter()
	a, _ := l.Reserve(limits.Request{UserID: id})
	b, _ := l.Reserve(limits.Request{UserID: id})
	_, err := l.Reserve(limits.Request{UserID: id})
	if code(err) != aiproxy.ELIMIT || limits.RetryAfter(err) != time.Second {
		t.Fatalf("3rd request in flight: %v, Retry-After %v; want ELIMIT, 1s", err, limits.RetryAfter(err))
	}
	a.Settle(nil, nil, nil, nil)
	c, err := l.Reserve(limits.Request{UserID: id})
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	b.Release()
	c.Release()
	c.Release() // a second release gives nothing back twice
	for range 2 {
		if _, err := l.Reserve(limits.Request{UserID: id}); err != nil {
			t.Fatalf("after all ended: %v", err)
		}
	}
	if _, err := l.Reserve(limits.Request{UserID: id}); code(err) != aiproxy.ELIMIT {
		t.Errorf("a double Release freed a slot twice: %v", err)
	}
}

// TestReserve_QuotaSaysWhenThePeriodResets, and a new period starts afresh:
// days and months on the calendar, weeks from Monday, all UTC.
func TestReserve_QuotaSaysWhenThePeriodResets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		period string
		reset  time.Time
	}{
		{"day", time.Date(2026, 3, 19, 0, 0, 0, 0, time.UTC)},
		{"week", time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)}, // Monday
		{"month", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.period, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			id := e.user("alice")
			e.limit("alice", "tokens", "1000/"+tc.period)
			l := e.limiter()
			r, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1000})
			if err != nil {
				t.Fatal(err)
			}
			r.Settle(nil, nil, nil, nil)
			_, err = l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1})
			if code(err) != aiproxy.EQUOTA || !strings.Contains(err.Error(), "resets at "+tc.reset.Format(time.RFC3339)) {
				t.Fatalf("Reserve() over budget = %v, want EQUOTA saying it resets at %s", err, tc.reset.Format(time.RFC3339))
			}
			h := http.Header{}
			limits.Headers(err, h)
			if h.Get("x-should-retry") != "false" || h.Get("Retry-After") != "" {
				t.Errorf("quota refusal headers = %v, want x-should-retry: false and no Retry-After", h)
			}
			e.clock.Add(tc.reset.Sub(e.clock.Now()) - time.Second)
			if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1}); code(err) != aiproxy.EQUOTA {
				t.Errorf("one second before the reset: %v, want EQUOTA", err)
			}
			e.clock.Add(time.Second)
			if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1000}); err != nil {
				t.Errorf("at the reset: %v, want a fresh budget", err)
			}
		})
	}
}

func TestReserve_TotalBudgetNeverResets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "spend", "0.01/total")
	l := e.limiter()
	r, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 1000, Price: gpt})
	if err != nil {
		t.Fatal(err)
	}
	r.Settle(nil, nil, nil, nil) // $0.01
	e.clock.Add(400 * 24 * time.Hour)
	_, err = l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 1, Price: gpt})
	if code(err) != aiproxy.EQUOTA || !strings.Contains(err.Error(), "never resets") {
		t.Errorf("Reserve() a year later = %v, want EQUOTA saying it never resets", err)
	}
}

// TestSettle_UnknownUsageIsChargedTheReservation: budgets fail closed.
func TestSettle_UnknownUsageIsChargedTheReservation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "2000/day", "spend", "1/day")
	l := e.limiter()
	r, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 200, MaxOutputTokens: 800, Price: gpt})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Settle(nil, nil, nil, nil)
	// 200 × 2.5 + 800 × 10 = 8500 micro-dollars.
	if want := (aiproxy.Charged{Tokens: 1000, MicroUSD: 8500}); got != want {
		t.Errorf("Settle(unknown usage) charged %+v, want the reservation %+v", got, want)
	}
	r, _ = l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 200, MaxOutputTokens: 800, Price: gpt})
	got = r.Settle(ptr[int64](200), ptr[int64](100), ptr[int64](100), nil)
	// (100 × 2.5 + 100 × 2.5 + 100 × 10) / 1e6 = 1500 micro-dollars.
	if want := (aiproxy.Charged{Tokens: 300, MicroUSD: 1500}); got != want {
		t.Errorf("Settle(known usage, no cost) charged %+v, want %+v", got, want)
	}
	if got := r.Settle(ptr[int64](1), ptr[int64](1), nil, nil); got.Tokens != 2 {
		t.Errorf("a second Settle reports %+v", got)
	}
	// 1300 used: 700 left, and a second Settle charged nothing more.
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 700, Price: gpt}); err != nil {
		t.Errorf("700 of 2000 left: %v", err)
	}
}

func TestRelease_GivesEverythingBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "1000/day", "rpm", "1", "tpm", "1000", "concurrent", "1")
	l := e.limiter()
	for i := range 5 {
		r, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1000})
		if err != nil {
			t.Fatalf("request %d after releases: %v", i+1, err)
		}
		r.Release()
	}
}

// TestNew_RebuildsTheCountersFromUsageRows: limits and what was used
// survive a restart, charges of unknown usage included.
func TestNew_RebuildsTheCountersFromUsageRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "10000/day", "spend", "1/week")
	l := e.limiter()
	var rows []aiproxy.Usage
	record := func(status int, prompt, completion *int64, settle bool) {
		r, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 1000, MaxOutputTokens: 1000, Price: gpt})
		if err != nil {
			t.Fatal(err)
		}
		u := aiproxy.Usage{Time: e.clock.Now(), UserID: id, UserName: "alice", Provider: "p", Model: "gpt-4o", Path: "/v1/chat/completions",
			Status: status, PromptTokens: prompt, CompletionTokens: completion}
		if prompt != nil {
			u.TotalTokens = ptr(*prompt + *completion)
			u.CostUSD = ptr(gpt.Cost(*prompt, 0, *completion))
		}
		if settle {
			ch := r.Settle(prompt, completion, nil, u.CostUSD)
			u.ChargedTokens, u.ChargedMicroUSD = ch.Tokens, ch.MicroUSD
		} else {
			r.Release()
		}
		rows = append(rows, u)
	}
	record(200, ptr[int64](1000), ptr[int64](500), true) // 1500 tokens, $0.0075
	record(200, nil, nil, true)                          // unknown: 2000 tokens, $0.0125
	record(500, nil, nil, false)                         // upstream error: nothing
	// Yesterday's usage is not today's.
	rows = append(rows, aiproxy.Usage{Time: t0.Add(-24 * time.Hour), UserID: id, UserName: "alice", Status: 200,
		TotalTokens: ptr[int64](5000)})
	if err := e.db.InsertUsage(t.Context(), rows); err != nil {
		t.Fatal(err)
	}

	// 3500 of 10000 tokens used: 6500 left, in both limiters. Spend:
	// $0.02 of $1 a week used, so $0.98 left.
	for name, l := range map[string]*limits.Limiter{"running": l, "restarted": e.limiter()} {
		_, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 6501, Price: gpt})
		if code(err) != aiproxy.EQUOTA || !strings.Contains(err.Error(), "(6500 tokens left") {
			t.Errorf("%s: 6501 tokens with 6500 left: %v, want EQUOTA with 6500 left", name, err)
		}
		// 6500 tokens fit; $0.98 is 98000 output tokens: 6500 × $10/1M fits.
		r, err := l.Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 6500, Price: gpt})
		if err != nil {
			t.Errorf("%s: 6500 tokens with 6500 left: %v", name, err)
		}
		r.Release()
	}
	e.limit("alice", "spend", "1/week")
	_, err := e.limiter().Reserve(limits.Request{UserID: id, Model: "gpt-4o", MaxOutputTokens: 98001, Price: gpt})
	if code(err) != aiproxy.EQUOTA || !strings.Contains(err.Error(), "($0.98 left") {
		t.Errorf("spend after restart: %v, want EQUOTA with $0.98 left", err)
	}
}

// TestLimiter_SeesLimitsSetByAnotherProcess: a `user limit` through another
// handle on the same file applies at the next request, without a restart.
func TestLimiter_SeesLimitsSetByAnotherProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	l := e.limiter()
	if r, err := l.Reserve(limits.Request{UserID: id, Model: "m"}); r != nil || err != nil {
		t.Fatalf("no limits yet: %v, %v", r, err)
	}
	cli := &env{t: t, path: e.path, db: open(t, e.path), clock: e.clock}
	cli.limit("*", "models", "gpt-*")
	e.request()
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m"}); code(err) != aiproxy.EMODEL {
		t.Errorf("after defaults set by another process: %v, want EMODEL", err)
	}
	cli.limit("alice") // own limits, none set: exempt from the defaults
	e.request()
	if r, err := l.Reserve(limits.Request{UserID: id, Model: "m"}); r != nil || err != nil {
		t.Errorf("with own empty limits: %v, %v; want no limits", r, err)
	}
	if err := cli.db.UpdateLimits(t.Context(), "alice", t0, func(*aiproxy.Limits) (*aiproxy.Limits, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	e.request()
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m"}); code(err) != aiproxy.EMODEL {
		t.Errorf("after clear, the defaults again: %v, want EMODEL", err)
	}
}

// TestLimiter_ChangingALimitKeepsWhatWasCounted: raising a budget keeps
// what its period used (in memory, newer than the database).
func TestLimiter_ChangingALimitKeepsWhatWasCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "1000/day")
	l := e.limiter()
	r, _ := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1000})
	r.Settle(nil, nil, nil, nil) // not yet in the database
	e.limit("alice", "tokens", "1500/day")
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 501}); code(err) != aiproxy.EQUOTA {
		t.Errorf("501 of a raised budget with 500 left: %v, want EQUOTA", err)
	}
	if _, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 500}); err != nil {
		t.Errorf("500 with 500 left: %v", err)
	}
}

func TestRetryAfter_WholeSecondsRoundedUpAtLeastOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "rpm", "1")
	l := e.limiter()
	e.clock.Add(300 * time.Millisecond)
	if _, err := l.Reserve(limits.Request{UserID: id}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(59*time.Second + 500*time.Millisecond) // 59.8 s
	_, err := l.Reserve(limits.Request{UserID: id})
	if got := limits.RetryAfter(err); got != time.Second {
		t.Errorf("RetryAfter 0.2 s before the slot frees = %v, want 1s", got)
	}
	if got := limits.RetryAfter(aiproxy.Errorf(aiproxy.EQUOTA, "x")); got != 0 {
		t.Errorf("RetryAfter(not a refusal) = %v, want 0", got)
	}
}

func TestHeaders_OnlyForLimitsThatAreSet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "1000/day")
	l := e.limiter()
	r, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	r.Headers(h)
	if len(h) != 0 {
		t.Errorf("headers without --rpm or --tpm = %v, want none", h)
	}
}

// BenchmarkReserveSettle_Limited is the limit check of one request of a
// user with every limit set: Reserve, Headers and Settle. The issue's
// budget is 2 µs.
func BenchmarkReserveSettle_Limited(b *testing.B) {
	e := newEnv(b)
	id := e.user("alice")
	e.limit("alice", "rpm", "1000000000", "tpm", "1000000000000", "concurrent", "1000",
		"tokens", "1000000000000/day", "spend", "1000000/month", "models", "gpt-4o*,claude-*")
	l := e.limiter()
	req := limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 1000, MaxOutputTokens: 1000, Price: gpt}
	p, c := ptr[int64](1000), ptr[int64](200)
	cost := ptr(0.0045)
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		r, err := l.Reserve(req)
		if err != nil {
			b.Fatal(err)
		}
		r.Headers(h)
		r.Settle(p, c, nil, cost)
	}
}

// BenchmarkReserveSettle_Unlimited is the same for a user without limits:
// no allocation.
func BenchmarkReserveSettle_Unlimited(b *testing.B) {
	e := newEnv(b)
	id := e.user("alice")
	l := e.limiter()
	req := limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 1000, MaxOutputTokens: 1000, Price: gpt}
	p, c := ptr[int64](1000), ptr[int64](200)
	b.ReportAllocs()
	for b.Loop() {
		r, err := l.Reserve(req)
		if err != nil {
			b.Fatal(err)
		}
		r.Settle(p, c, nil, nil)
	}
}

// TestLimiter_KeepsItsLimitsWhenTheDatabaseGoesAway: limits changed just
// before the database became unreachable cannot be loaded; the limiter
// keeps enforcing the ones it has instead of refusing every request, and a
// user without limits is not touched.
func TestLimiter_KeepsItsLimitsWhenTheDatabaseGoesAway(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.user("alice")
	bob := e.user("bob")
	e.limit("alice", "rpm", "1")
	l := e.limiter()
	if _, err := l.Reserve(limits.Request{UserID: alice, Model: "m"}); err != nil {
		t.Fatal(err)
	}
	cli := &env{t: t, path: e.path, db: open(t, e.path), clock: e.clock}
	cli.limit("alice", "rpm", "100")
	e.request()  // serve's next lookup sees the change…
	e.db.Close() // …and then the database is gone
	_, err := l.Reserve(limits.Request{UserID: alice, Model: "m"})
	want := aiproxy.ELIMIT // the rpm of 1 still holds
	if testPostgres {
		want = aiproxy.EUNAVAILABLE // the counters themselves are in the database
	}
	if code(err) != want {
		t.Errorf("alice after the database went away: %v, want %s", err, want)
	}
	if r, err := l.Reserve(limits.Request{UserID: bob, Model: "m"}); r != nil || err != nil {
		t.Errorf("bob (no limits) after the database went away: %v, %v; want nothing", r, err)
	}
}

// TestLimiter_BudgetSetAgainCountsWhatWasUsedMeanwhile: a token budget
// lifted for a while and set again in the same period counts what the user
// spent meanwhile (the usage rows), not only what it counted before.
func TestLimiter_BudgetSetAgainCountsWhatWasUsedMeanwhile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.user("alice")
	e.limit("alice", "tokens", "1000/day")
	l := e.limiter()
	r, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 800})
	if err != nil {
		t.Fatal(err)
	}
	r.Settle(ptr[int64](0), ptr[int64](800), nil, nil)
	e.limit("alice", "rpm", "100") // the budget is lifted
	r, err = l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 5000})
	if err != nil {
		t.Fatalf("5000 tokens without a budget: %v", err)
	}
	r.Settle(ptr[int64](0), ptr[int64](5000), nil, nil)
	if err := e.db.InsertUsage(t.Context(), []aiproxy.Usage{
		{Time: t0, UserID: id, UserName: "alice", Provider: "p", Model: "m", Path: "/v1/chat/completions", Status: 200,
			TotalTokens: ptr[int64](800), ChargedTokens: 800},
		{Time: t0, UserID: id, UserName: "alice", Provider: "p", Model: "m", Path: "/v1/chat/completions", Status: 200,
			TotalTokens: ptr[int64](5000), ChargedTokens: 5000},
	}); err != nil {
		t.Fatal(err)
	}
	e.limit("alice", "tokens", "1000/day") // set again, the same day
	if r, err := l.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 150}); code(err) != aiproxy.EQUOTA {
		t.Errorf("with 5800 of 1000 used today: %v, %v; want EQUOTA", r, err)
		r.Release()
	}
}
