package server

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

// size is the number of addresses g remembers.
func (g *tokenGuard) size() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.tat)
}

func testGuard(c *fakeClock, max int) *tokenGuard {
	g := newTokenGuard()
	g.now = c.now
	g.max = max
	g.setToken("Une9f2ijwe")
	return g
}

func TestTokenGuard(t *testing.T) {
	t.Parallel()
	type step struct {
		advance time.Duration
		client  string
		token   string
		ok      bool
		retry   time.Duration
	}
	const good, bad = "Une9f2ijwe", "guess"
	wrongs := func(n int, client string) []step {
		var s []step
		for range n {
			s = append(s, step{client: client, token: bad})
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"right token passes", []step{{client: "a", token: good, ok: true}}},
		{"a burst of wrong tokens, then 429", cat(wrongs(guardBurst, "a"),
			[]step{{client: "a", token: bad, retry: guardInterval}})},
		{"the right token is throttled too, or guesses could be told apart", cat(wrongs(guardBurst, "a"),
			[]step{{client: "a", token: good, retry: guardInterval}})},
		{"another address is not throttled", cat(wrongs(guardBurst, "a"),
			[]step{{client: "b", token: good, ok: true}, {client: "b", token: bad}})},
		{"one more guess per interval", cat(wrongs(guardBurst, "a"), []step{
			{advance: guardInterval - time.Second, client: "a", token: bad, retry: time.Second},
			{advance: time.Second, client: "a", token: bad},
			{client: "a", token: bad, retry: guardInterval},
		})},
		{"a full minute restores the burst", cat(wrongs(guardBurst, "a"),
			[]step{{advance: time.Duration(guardBurst) * guardInterval, client: "a", token: bad}},
			wrongs(guardBurst-1, "a"),
			[]step{{client: "a", token: bad, retry: guardInterval}})},
		{"the right token forgets earlier failures", cat(wrongs(guardBurst-1, "a"),
			[]step{{client: "a", token: good, ok: true}},
			wrongs(guardBurst, "a"),
			[]step{{client: "a", token: good, retry: guardInterval}})},
		{"a missing token is not a guess", cat(wrongs(guardBurst-1, "a"),
			[]step{{client: "a", token: ""}, {client: "a", token: ""}, {client: "a", token: good, ok: true}})},
		{"a prefix or extension of the token is wrong", []step{
			{client: "a", token: good[:len(good)-1]}, {client: "a", token: good + "x"}, {client: "a", token: "une9f2ijwe"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newFakeClock()
			g := testGuard(c, guardMaxClients)
			for i, s := range tc.steps {
				c.add(s.advance)
				ok, retry, _ := g.admit(s.client, s.token)
				if ok != s.ok || retry != s.retry {
					t.Errorf("step %d: admit(%q, %q) = %v, %v; want %v, %v", i, s.client, s.token, ok, retry, s.ok, s.retry)
				}
			}
		})
	}
}

func TestTokenGuard_Off(t *testing.T) {
	t.Parallel()
	g := newTokenGuard()
	g.setToken("")
	for _, tok := range []string{"", "x", "Une9f2ijwe"} {
		if ok, retry, _ := g.admit("a", tok); ok || retry != 0 {
			t.Errorf("admit(%q) with no token set = %v, %v; want false, 0", tok, ok, retry)
		}
	}
	if n := g.size(); n != 0 {
		t.Errorf("guard remembers %d clients with the admin surface off, want 0", n)
	}
}

func TestTokenGuard_Bounded(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	g := testGuard(c, 8)
	for i := range 1000 {
		g.admit("10.0.0."+strconv.Itoa(i), "guess")
		if n := g.size(); n > 8 {
			t.Fatalf("after %d clients the guard holds %d, want at most 8", i+1, n)
		}
	}
	// Entries whose debt is paid are dropped before any throttled one.
	for range guardBurst {
		g.admit("attacker", "guess")
	}
	c.add(time.Hour)
	for i := range 7 {
		g.admit("late"+strconv.Itoa(i), "guess")
	}
	if _, retry, _ := g.admit("attacker", "guess"); retry != 0 {
		// The attacker's debt is paid after an hour; it must be free again.
		t.Errorf("attacker after an hour: retry %v, want 0", retry)
	}
	for range guardBurst - 1 {
		g.admit("attacker", "guess")
	}
	g.admit("one-more", "guess")
	if _, retry, _ := g.admit("attacker", "guess"); retry == 0 {
		t.Errorf("a throttled address was evicted while paid-up ones could go")
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, remote, want string
	}{
		{"ipv4", "192.0.2.7:51234", "192.0.2.7"},
		{"ipv4-mapped ipv6", "[::ffff:192.0.2.7]:51234", "192.0.2.7"},
		{"ipv6 counts per /64", "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", "2001:db8:1:2::/64"},
		{"ipv6 with zone", "[fe80::1%eth0]:443", "fe80::/64"},
		{"no port", "192.0.2.7", "192.0.2.7"},
		{"garbage kept as is", "pipe", "pipe"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote}
			if got := clientKey(r); got != tc.want {
				t.Errorf("clientKey(%q) = %q, want %q", tc.remote, got, tc.want)
			}
		})
	}
}

func TestRedactPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, want string
	}{
		{"token register", "/Une9f2ijwe/register/janlay", "/***/register/janlay"},
		{"token addkey", "/Une9f2ijwe/addkey/api.groq.com/gsk_secret", "/***/addkey/api.groq.com/***"},
		{"token addkey with a slash in the key", "/Une9f2ijwe/addkey/api.groq.com/gsk/sec/ret", "/***/addkey/api.groq.com/***"},
		{"token provider key", "/Une9f2ijwe/provider/api.groq.com/gsk_secret", "/***/provider/api.groq.com/***"},
		{"token users", "/Une9f2ijwe/users", "/***/users"},
		{"token alone", "/Une9f2ijwe", "/***"},
		{"admin addkey", "/admin/addkey/api.groq.com/gsk_secret", "/admin/addkey/api.groq.com/***"},
		{"admin addkey body form", "/admin/addkey/api.groq.com", "/admin/addkey/api.groq.com"},
		{"admin provider key", "/admin/provider/api.groq.com/gsk_secret", "/admin/provider/api.groq.com/***"},
		{"admin unknown", "/admin/Une9f2ijwe/x", "/admin/***"},
		{"escaped slash shifts the token", "/abc/Une9f2ijwe/register/x", "/***/***"},
		{"dot-dot hides a token", "/me/../Une9f2ijwe/users", "/***/users"},
		{"double slash hides a token", "//Une9f2ijwe/register/x", "/***/register/x"},
		{"me", "/me", "/me"},
		{"me reset", "/me/reset", "/me/reset"},
		{"healthz", "/healthz", "/healthz"},
		{"proxy", "/v1/chat/completions", "/v1/chat/completions"},
		{"openai", "/openai/v1/models", "/openai/v1/models"},
		{"root", "/", "/"},
		{"unknown", "/favicon.ico", "/***"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactPath(tc.path); got != tc.want {
				t.Errorf("redactPath(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

// TestTokenGuard_Tripped: the guard reports the wrong token that starts a
// throttling, once, so that the log gets one line per throttling.
func TestTokenGuard_Tripped(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	g := testGuard(c, guardMaxClients)
	var trips []int
	for i := range 3 * guardBurst {
		if _, _, tripped := g.admit("a", "guess"); tripped {
			trips = append(trips, i)
		}
	}
	if len(trips) != 1 || trips[0] != guardBurst-1 {
		t.Errorf("tripped at guesses %v, want only at %d", trips, guardBurst-1)
	}
	c.add(guardInterval)
	if _, retry, tripped := g.admit("a", "guess"); retry != 0 || !tripped {
		t.Errorf("the guess after one interval: retry %v, tripped %v; want 0, true", retry, tripped)
	}
}
