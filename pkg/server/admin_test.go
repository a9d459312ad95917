package server_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/server"
)

// adminToken is the seed README's example ACCESS_TOKEN.
const adminToken = "Une9f2ijwe"

func newAdminHarness(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{server: server.Config{AccessToken: adminToken}})
}

// answer is one response, read whole.
type answer struct {
	status int
	header http.Header
	body   string
}

func call(h *harness, method, path, body string, hdr map[string]string) answer {
	h.t.Helper()
	res := h.do(method, path, body, hdr)
	return answer{status: res.StatusCode, header: res.Header, body: readAll(h.t, res)}
}

// snapshot is the admin state a request may change.
type snapshot struct {
	Users     []aiproxy.User
	Providers []aiproxy.Provider
}

func snap(t *testing.T, svc *admin.Service) snapshot {
	t.Helper()
	u, err := svc.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p, err := svc.ListProviders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{u, p}
}

// openaiError returns the code and type of an OpenAI-shaped error body, or
// reports that the body is not one.
func openaiError(t *testing.T, a answer) (code, typ string) {
	t.Helper()
	var e struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal([]byte(a.body), &e); err != nil {
		t.Errorf("body %q is not JSON: %v", a.body, err)
		return "", ""
	}
	for _, k := range []string{"message", "type", "code"} {
		if s, ok := e.Error[k].(string); !ok || s == "" {
			t.Errorf("body %s: error.%s is not a non-empty string", a.body, k)
		}
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	code, _ = e.Error["code"].(string)
	typ, _ = e.Error["type"].(string)
	return code, typ
}

// wantAdminHeaders checks what every answer past the token check carries.
func wantAdminHeaders(t *testing.T, a answer) {
	t.Helper()
	if got := a.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	wantNoCORS(t, a)
}

func wantNoCORS(t *testing.T, a answer) {
	t.Helper()
	for k := range a.header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("admin answer carries %s: %q", k, a.header.Get(k))
		}
	}
}

var keyRE = regexp.MustCompile(`^sk-cfw[A-Za-z0-9]{45}$`)

// TestAdmin_SeedCurl runs the seed README's curl commands, in their shape,
// against aiproxy.
func TestAdmin_SeedCurl(t *testing.T) {
	t.Parallel()
	const curlPath = "/usr/bin/curl"
	if _, err := os.Stat(curlPath); err != nil {
		t.Skip("no curl at " + curlPath)
	}
	h := newAdminHarness(t)
	home := t.TempDir()
	curl := func(t *testing.T, args ...string) string {
		t.Helper()
		c := exec.Command(curlPath, args...)
		c.Env = []string{"HOME=" + home, "NO_PROXY=*", "no_proxy=*"}
		out, err := c.Output()
		if err != nil {
			t.Fatalf("curl %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	url := h.proxy.URL + "/" + adminToken
	ctx := context.Background()

	var first string
	t.Run("register", func(t *testing.T) {
		out := curl(t, "-X", "POST", url+"/register/janlay")
		first = strings.TrimSpace(out)
		if !keyRE.MatchString(first) {
			t.Fatalf("register printed %q, want an sk-cfw key", out)
		}
		if u, err := h.svc.Authenticate(ctx, first); err != nil || u.Name != "janlay" {
			t.Errorf("Authenticate(new key) = %q, %v; want janlay", u.Name, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		out := curl(t, "-X", "POST", url+"/reset/janlay")
		key := strings.TrimSpace(out)
		if !keyRE.MatchString(key) || key == first {
			t.Fatalf("reset printed %q, want a new sk-cfw key", out)
		}
		if _, err := h.svc.Authenticate(ctx, first); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
			t.Errorf("Authenticate(old key) error = %v, want EUNAUTHORIZED", err)
		}
		if u, err := h.svc.Authenticate(ctx, key); err != nil || u.Name != "janlay" {
			t.Errorf("Authenticate(reset key) = %q, %v; want janlay", u.Name, err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if out := curl(t, "-X", "DELETE", url+"/delete/janlay"); strings.TrimSpace(out) != "OK" {
			t.Errorf("delete printed %q, want OK", out)
		}
		for _, u := range snap(t, h.svc).Users {
			if u.Name == "janlay" {
				t.Errorf("janlay is still listed")
			}
		}
	})
	t.Run("addkey", func(t *testing.T) {
		if out := curl(t, "-X", "POST", url+"/addkey/api.groq.com/gsk_your_groq_api_key_here"); strings.TrimSpace(out) != "OK" {
			t.Errorf("addkey printed %q, want OK", out)
		}
		p, err := h.svc.Provider(ctx, "api.groq.com")
		if err != nil {
			t.Fatal(err)
		}
		if p.BaseURL != "https://api.groq.com" || !slices.Equal(p.Keys, []string{"gsk_your_groq_api_key_here"}) {
			t.Errorf("provider = %s with %d keys, want https://api.groq.com with the one key", p.BaseURL, len(p.Keys))
		}
	})
	t.Run("addkey keeps a known host's base URL", func(t *testing.T) {
		if out := curl(t, "-X", "POST", url+"/addkey/api.openai.com/sk-upstream-openai-2"); strings.TrimSpace(out) != "OK" {
			t.Errorf("addkey printed %q, want OK", out)
		}
		p, err := h.svc.Provider(ctx, "api.openai.com")
		if err != nil {
			t.Fatal(err)
		}
		if p.BaseURL != h.upstream.URL || len(p.Keys) != 2 {
			t.Errorf("provider = %s with %d keys, want %s with 2", p.BaseURL, len(p.Keys), h.upstream.URL)
		}
	})
	if strings.Contains(h.logs.String(), adminToken) || strings.Contains(h.logs.String(), "gsk_your") {
		t.Errorf("the log holds the token or the provider key:\n%s", h.logs)
	}
}

// TestAdmin_Refused: a wrong, missing or unconfigured token gets the
// unknown-path answer and changes nothing; the right token with the wrong
// method gets 405 with Allow.
func TestAdmin_Refused(t *testing.T) {
	t.Parallel()
	auth := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	tests := []struct {
		name   string
		token  string // configured
		method string
		path   string
		hdr    map[string]string
		status int
		allow  string
	}{
		{"wrong token register", adminToken, "POST", "/wrong/register/bob", nil, 403, ""},
		{"wrong token delete", adminToken, "DELETE", "/wrong/delete/alice", nil, 403, ""},
		{"wrong token addkey", adminToken, "POST", "/wrong/addkey/api.groq.com/gsk_x", nil, 403, ""},
		{"wrong token remove provider", adminToken, "DELETE", "/wrong/provider/api.openai.com", nil, 403, ""},
		{"wrong token expire", adminToken, "POST", "/wrong/expire/alice?never=1", nil, 403, ""},
		{"wrong token and wrong method", adminToken, "GET", "/wrong/register/bob", nil, 403, ""},
		{"wrong token users", adminToken, "GET", "/wrong/users", nil, 403, ""},
		{"token prefix", adminToken, "POST", "/" + adminToken[:len(adminToken)-1] + "/register/bob", nil, 403, ""},
		{"token extended", adminToken, "POST", "/" + adminToken + "x/register/bob", nil, 403, ""},
		{"token in other case", adminToken, "POST", "/" + strings.ToUpper(adminToken) + "/register/bob", nil, 403, ""},
		{"admin without Authorization", adminToken, "POST", "/admin/register/bob", nil, 403, ""},
		{"admin with wrong bearer", adminToken, "DELETE", "/admin/delete/alice", auth("wrong"), 403, ""},
		{"admin with the token as Basic", adminToken, "DELETE", "/admin/delete/alice", map[string]string{"Authorization": "Basic " + adminToken}, 403, ""},
		{"admin with the token in the path", adminToken, "POST", "/admin/" + adminToken + "/register/bob", nil, 403, ""},
		{"right token, unknown route", adminToken, "POST", "/" + adminToken + "/create/bob", nil, 403, ""},
		{"right token, addkey without key", adminToken, "POST", "/" + adminToken + "/addkey/api.groq.com", nil, 403, ""},
		{"no token configured", "", "POST", "/" + adminToken + "/register/bob", nil, 403, ""},
		{"no token configured, empty bearer", "", "DELETE", "/admin/delete/alice", map[string]string{"Authorization": "Bearer "}, 403, ""},
		{"no token configured, users", "", "GET", "/" + adminToken + "/users", nil, 403, ""},
		{"no token configured, addkey", "", "POST", "/admin/addkey/api.groq.com", auth(adminToken), 403, ""},
		{"wrong method register", adminToken, "GET", "/" + adminToken + "/register/bob", nil, 405, "POST"},
		{"wrong method delete", adminToken, "POST", "/" + adminToken + "/delete/alice", nil, 405, "DELETE"},
		{"wrong method users", adminToken, "POST", "/" + adminToken + "/users", nil, 405, "GET, HEAD"},
		{"wrong method admin addkey", adminToken, "PUT", "/admin/addkey/api.groq.com", auth(adminToken), 405, "POST"},
		{"wrong method admin provider", adminToken, "PUT", "/admin/provider/api.openai.com", auth(adminToken), 405, "DELETE, POST"},
		{"wrong method provider key", adminToken, "POST", "/" + adminToken + "/provider/api.openai.com/sk-upstream-openai-1", nil, 405, "DELETE"},
		{"options on admin", adminToken, "OPTIONS", "/" + adminToken + "/register/bob", nil, 405, "POST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{server: server.Config{AccessToken: tc.token}})
			before := snap(t, h.svc)
			got := call(h, tc.method, tc.path, `{"key":"gsk_body"}`, tc.hdr)
			if got.status != tc.status {
				t.Fatalf("%s %s: status %d, want %d; body %s", tc.method, tc.path, got.status, tc.status, got.body)
			}
			if diff := cmp.Diff(before, snap(t, h.svc)); diff != "" {
				t.Errorf("state changed (-before +after):\n%s", diff)
			}
			wantNoCORS(t, got)
			code, _ := openaiError(t, got)
			if tc.status == 405 {
				if code != "method_not_allowed" || got.header.Get("Allow") != tc.allow {
					t.Errorf("405 code %q Allow %q, want method_not_allowed and %q", code, got.header.Get("Allow"), tc.allow)
				}
				wantAdminHeaders(t, got)
				return
			}
			// A refusal is indistinguishable from an unknown path.
			unknown := call(h, tc.method, "/no/such/route/here", `{"key":"gsk_body"}`, tc.hdr)
			// Only the date and the request's own id differ.
			for _, name := range []string{"Date", "X-Request-Id"} {
				got.header.Del(name)
				unknown.header.Del(name)
			}
			if diff := cmp.Diff(unknown, got, cmp.AllowUnexported(answer{})); diff != "" {
				t.Errorf("refusal differs from an unknown path's answer (-unknown +refusal):\n%s", diff)
			}
			if strings.Contains(h.logs.String(), adminToken) {
				t.Errorf("the log holds the token:\n%s", h.logs)
			}
		})
	}
}

// TestAdmin_Throttle: wrong tokens from one address are slowed down after
// a burst; other addresses are not.
func TestAdmin_Throttle(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	before := snap(t, h.svc)
	for i := range 10 {
		a := call(h, "POST", "/guess-"+strconv.Itoa(i)+"/register/mallory", "", nil)
		if a.status != 403 {
			t.Fatalf("guess %d: status %d, want 403", i, a.status)
		}
	}
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
	}{
		{"another wrong token", "/guess-10/register/mallory", nil},
		{"the right token from the same address", "/" + adminToken + "/register/mallory", nil},
		{"the bearer form", "/admin/register/mallory", bearer(adminToken)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := call(h, "POST", tc.path, "", tc.hdr)
			if a.status != 429 {
				t.Fatalf("status %d, want 429; body %s", a.status, a.body)
			}
			if code, typ := openaiError(t, a); code != "rate_limited" || typ != "rate_limit_error" {
				t.Errorf("error %s/%s, want rate_limited/rate_limit_error", code, typ)
			}
			if s, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || s < 1 || s > 6 {
				t.Errorf("Retry-After = %q, want 1 to 6 seconds", a.header.Get("Retry-After"))
			}
			wantAdminHeaders(t, a)
		})
	}
	t.Run("unknown paths are not throttled", func(t *testing.T) {
		if a := call(h, "GET", "/no/such/route/here", "", nil); a.status != 403 {
			t.Errorf("status %d, want 403", a.status)
		}
	})
	t.Run("another address is not blocked", func(t *testing.T) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		defer c.CloseIdleConnections()
		res, err := c.Post(h.proxy.URL+"/"+adminToken+"/register/trent", "", nil)
		if err != nil {
			t.Skipf("cannot connect from 127.0.0.2: %v", err)
		}
		if body := readAll(t, res); res.StatusCode != 200 || !keyRE.MatchString(strings.TrimSpace(body)) {
			t.Errorf("right token from 127.0.0.2: status %d %q, want 200 and a key", res.StatusCode, body)
		}
	})
	after := snap(t, h.svc)
	for _, u := range after.Users {
		if u.Name == "mallory" {
			t.Errorf("a throttled request created mallory")
		}
	}
	if diff := cmp.Diff(before.Providers, after.Providers); diff != "" {
		t.Errorf("providers changed (-before +after):\n%s", diff)
	}
	logs := h.logs.String()
	if strings.Contains(logs, adminToken) || strings.Contains(logs, "guess-") {
		t.Errorf("the log holds a token or a guess:\n%s", logs)
	}
	if n := strings.Count(logs, `"msg":"admin token guesses throttled","client":"127.0.0.1"`); n != 1 {
		t.Errorf("the log has %d throttling lines for 127.0.0.1, want 1:\n%s", n, logs)
	}
}

// routeForm is one of the two ways to present the admin token.
type routeForm struct {
	name   string
	prefix string
	hdr    map[string]string
}

func routeForms() []routeForm {
	return []routeForm{
		{"path token", "/" + adminToken, nil},
		{"bearer", "/admin", bearer(adminToken)},
	}
}

func (f routeForm) headers(accept string) map[string]string {
	hdr := map[string]string{}
	for k, v := range f.hdr {
		hdr[k] = v
	}
	if accept != "" {
		hdr["Accept"] = accept
	}
	return hdr
}

// TestAdmin_Routes runs every admin operation in both route forms, with
// text and JSON answers, and checks the answers and the resulting state.
func TestAdmin_Routes(t *testing.T) {
	t.Parallel()
	for _, form := range routeForms() {
		for _, asJSON := range []bool{false, true} {
			name := form.name + "/text"
			accept := ""
			if asJSON {
				name, accept = form.name+"/json", "application/json"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testRoutes(t, form, accept, asJSON)
			})
		}
	}
}

func testRoutes(t *testing.T, form routeForm, accept string, asJSON bool) {
	h := newAdminHarness(t)
	ctx := context.Background()
	hdr := form.headers(accept)
	do := func(method, path string) answer {
		t.Helper()
		a := call(h, method, form.prefix+path, "", hdr)
		if a.status != 200 {
			t.Fatalf("%s %s: status %d, want 200; body %s", method, path, a.status, a.body)
		}
		wantAdminHeaders(t, a)
		return a
	}
	key := func(a answer, name string) string {
		t.Helper()
		if !asJSON {
			if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			k := strings.TrimSuffix(a.body, "\n")
			if !keyRE.MatchString(k) {
				t.Fatalf("body %q, want a key", a.body)
			}
			return k
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(a.body), &got); err != nil || len(got) != 2 || got["name"] != name || !keyRE.MatchString(got["key"]) {
			t.Fatalf("body %s, want {\"name\":%q,\"key\":\"sk-cfw…\"}", a.body, name)
		}
		return got["key"]
	}
	ok := func(a answer) {
		t.Helper()
		want := "OK\n"
		if asJSON {
			want = "{\"ok\":true}\n"
		}
		if a.body != want {
			t.Errorf("body %q, want %q", a.body, want)
		}
	}
	user := func(name string) *aiproxy.User {
		for _, u := range snap(t, h.svc).Users {
			if u.Name == name {
				return &u
			}
		}
		return nil
	}
	provider := func(host string) *aiproxy.Provider {
		for _, p := range snap(t, h.svc).Providers {
			if p.Host == host {
				return &p
			}
		}
		return nil
	}

	bobKey := key(do("POST", "/register/bob"), "bob")
	if u, err := h.svc.Authenticate(ctx, bobKey); err != nil || u.Name != "bob" || u.ExpiresAt != nil {
		t.Errorf("register bob: Authenticate = %+v, %v; want bob without expiry", u, err)
	}
	newKey := key(do("POST", "/reset/bob"), "bob")
	if _, err := h.svc.Authenticate(ctx, bobKey); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("old key after reset: error %v, want EUNAUTHORIZED", err)
	}
	if _, err := h.svc.Authenticate(ctx, newKey); err != nil {
		t.Errorf("new key after reset: %v", err)
	}

	start := time.Now()
	key(do("POST", "/register/carol?expires=30d"), "carol")
	end := time.Now()
	c := user("carol")
	if c == nil || c.ExpiresAt == nil || c.ExpiresAt.Before(start.Add(30*24*time.Hour).Truncate(time.Millisecond)) || c.ExpiresAt.After(end.Add(30*24*time.Hour)) {
		t.Fatalf("carol = %+v, want an expiry 30 days from now", c)
	}
	exp := *c.ExpiresAt
	key(do("POST", "/reset/carol"), "carol")
	if c := user("carol"); c.ExpiresAt == nil || !c.ExpiresAt.Equal(exp) {
		t.Errorf("reset without ?expires= changed the expiry to %v, want %v", c.ExpiresAt, exp)
	}
	key(do("POST", "/reset/carol?expires=2099-01-31"), "carol")
	if c := user("carol"); c.ExpiresAt == nil || !c.ExpiresAt.Equal(time.Date(2099, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("reset ?expires=2099-01-31: expiry %v, want 2099-02-01T00:00:00Z", c.ExpiresAt)
	}

	ok(do("POST", "/expire/carol?never=1"))
	if c := user("carol"); c.ExpiresAt != nil {
		t.Errorf("expire ?never=1: expiry %v, want none", c.ExpiresAt)
	}
	ok(do("POST", "/expire/bob?expires=2099-12-31"))
	if b := user("bob"); b.ExpiresAt == nil || !b.ExpiresAt.Equal(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("expire ?expires=2099-12-31: expiry %v, want 2100-01-01T00:00:00Z", b.ExpiresAt)
	}

	ok(do("DELETE", "/delete/bob"))
	if user("bob") != nil {
		t.Errorf("bob is still listed after delete")
	}
	if _, err := h.svc.Authenticate(ctx, newKey); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("deleted user's key: error %v, want EUNAUTHORIZED", err)
	}

	ok(do("POST", "/addkey/api.groq.com/gsk_one"))
	ok(do("POST", "/addkey/API.Groq.com./gsk_two"))
	if p := provider("api.groq.com"); p == nil || p.BaseURL != "https://api.groq.com" || p.KeyCount != 2 || !p.InjectUsage {
		t.Errorf("api.groq.com = %+v, want https://api.groq.com with 2 keys", p)
	}
	ok(do("POST", "/addkey/api.openai.com/sk-upstream-openai-2"))
	if p := provider("api.openai.com"); p == nil || p.BaseURL != h.upstream.URL || p.KeyCount != 2 {
		t.Errorf("api.openai.com = %+v, want its base URL kept and 2 keys", p)
	}
	ok(do("POST", "/addkey/local.test:8080/lk-1?base_url=http://127.0.0.1:8080/v"))
	if p := provider("local.test:8080"); p == nil || p.BaseURL != "http://127.0.0.1:8080/v" {
		t.Errorf("local.test:8080 = %+v, want base URL from ?base_url=", p)
	}
	// provider set's twin answers the provider's row, in JSON.
	isRow := func(a answer) {
		t.Helper()
		if !strings.HasPrefix(a.body, `{"host":"local.test:8080",`) {
			t.Errorf("body %q, want the provider's row", a.body)
		}
	}
	isRow(do("POST", "/provider/local.test:8080?inject_usage=false"))
	if p := provider("local.test:8080"); p == nil || p.InjectUsage {
		t.Errorf("local.test:8080 = %+v after ?inject_usage=false, want it off", p)
	}
	isRow(do("POST", "/provider/local.test:8080?inject_usage=1"))
	if p := provider("local.test:8080"); p == nil || !p.InjectUsage {
		t.Errorf("local.test:8080 = %+v after ?inject_usage=1, want it on", p)
	}
	ok(do("POST", "/addkey/quiet.test/qk-1?inject_usage=false"))
	if p := provider("quiet.test"); p == nil || p.InjectUsage || p.BaseURL != "https://quiet.test" {
		t.Errorf("quiet.test = %+v, want https://quiet.test without usage injection", p)
	}

	users := do("GET", "/users")
	var ul []map[string]any
	if err := json.Unmarshal([]byte(users.body), &ul); err != nil {
		t.Fatalf("users body %s: %v", users.body, err)
	}
	var names []string
	for _, u := range ul {
		names = append(names, u["name"].(string))
		if diff := cmp.Diff([]string{"created_at", "expires_at", "key_hint", "last_used_at", "limits", "name", "requests"}, sortedKeys(u)); diff != "" {
			t.Errorf("user fields (-want +got):\n%s", diff)
		}
	}
	if diff := cmp.Diff([]string{"alice", "carol"}, names); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(users.body, `[{"name":"alice","key_hint":"`) {
		t.Errorf("users body %s, want the CLI's field order", users.body)
	}

	provs := do("GET", "/providers")
	var pl []map[string]any
	if err := json.Unmarshal([]byte(provs.body), &pl); err != nil {
		t.Fatalf("providers body %s: %v", provs.body, err)
	}
	var hosts []string
	for _, p := range pl {
		hosts = append(hosts, p["host"].(string))
		if diff := cmp.Diff([]string{"alias", "api_root", "auth", "base_url", "headers", "host", "inject_usage", "key_hints", "key_states", "keys"}, sortedKeys(p)); diff != "" {
			t.Errorf("provider fields (-want +got):\n%s", diff)
		}
	}
	if diff := cmp.Diff([]string{"api.groq.com", "api.openai.com", "local.test:8080", "quiet.test"}, hosts); diff != "" {
		t.Errorf("providers (-want +got):\n%s", diff)
	}
	if head := do("HEAD", "/users"); head.body != "" {
		t.Errorf("HEAD /users body %q, want none", head.body)
	}

	ok(do("DELETE", "/provider/api.groq.com/gsk_one"))
	if p := provider("api.groq.com"); p == nil || p.KeyCount != 1 {
		t.Errorf("after removing one key api.groq.com = %+v, want 1 key", p)
	}
	ok(do("DELETE", "/provider/api.groq.com"))
	if p := provider("api.groq.com"); p != nil {
		t.Errorf("api.groq.com = %+v after removing the host, want none", p)
	}

	if s := do("GET", "/stats"); s.body != `[{"requests":0,"errors":0,"partial":0,"prompt_tokens":0,"completion_tokens":0,"total_tokens":0,"cost_usd":null,"unmetered":0}]`+"\n" {
		t.Errorf("stats body %s, want one zero totals row", s.body)
	}
	if s := do("GET", "/stats?by=user"); s.body != "[]\n" {
		t.Errorf("stats by user body %s, want []", s.body)
	}
}

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestAdmin_AddKeyBody: POST /admin/addkey/{host} takes the key in a JSON
// body, which keeps it out of URLs.
func TestAdmin_AddKeyBody(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	auth := bearer(adminToken)
	tests := []struct {
		name   string
		host   string
		body   string
		status int
		code   string
	}{
		{"new host with base URL", "local.test", `{"key":"lk-secret-1","base_url":"http://127.0.0.1:9/api"}`, 200, ""},
		{"known host keeps its URL", "local.test", `{"key":"lk-secret-2"}`, 200, ""},
		{"same URL is fine", "local.test", `{"key":"lk-secret-3","base_url":"http://127.0.0.1:9/api/"}`, 200, ""},
		{"inject_usage off", "quiet.test", `{"key":"qk-secret-1","inject_usage":false}`, 200, ""},
		{"other URL conflicts", "local.test", `{"key":"lk-secret-4","base_url":"https://elsewhere.test"}`, 409, "conflict"},
		{"same key again", "local.test", `{"key":"lk-secret-1"}`, 409, "conflict"},
		{"no body", "local.test", ``, 400, "invalid_request"},
		{"empty key", "local.test", `{"key":""}`, 400, "invalid_request"},
		{"not JSON", "local.test", `key=lk-secret-5`, 400, "invalid_request"},
		{"unknown field", "local.test", `{"key":"lk-secret-5","baseurl":"x"}`, 400, "invalid_request"},
		{"wrong type", "local.test", `{"key":5}`, 400, "invalid_request"},
		{"trailing data", "local.test", `{"key":"lk-secret-5"} {"key":"lk-secret-6"}`, 400, "invalid_request"},
		{"bad base URL", "new.test", `{"key":"nk-secret-1","base_url":"ftp://x"}`, 400, "invalid_request"},
		{"bad host", "bad_host!", `{"key":"bk-secret-1"}`, 400, "invalid_request"},
		{"too big", "local.test", `{"key":"` + strings.Repeat("a", 70<<10) + `"}`, 400, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snap(t, h.svc)
			a := call(h, "POST", "/admin/addkey/"+tc.host, tc.body, auth)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tc.status, a.body)
			}
			wantAdminHeaders(t, a)
			if tc.status != 200 {
				if code, _ := openaiError(t, a); code != tc.code {
					t.Errorf("code %q, want %q", code, tc.code)
				}
				if diff := cmp.Diff(before, snap(t, h.svc)); diff != "" {
					t.Errorf("a refused addkey changed state (-before +after):\n%s", diff)
				}
				if strings.Contains(a.body, "secret") {
					t.Errorf("error body %s holds a key", a.body)
				}
			}
		})
	}
	got := map[string]aiproxy.Provider{}
	for _, p := range snap(t, h.svc).Providers {
		p.KeyHints = nil
		got[p.Host] = p
	}
	want := map[string]aiproxy.Provider{
		"local.test": {Host: "local.test", BaseURL: "http://127.0.0.1:9/api", KeyCount: 3, InjectUsage: true, APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
		"quiet.test": {Host: "quiet.test", BaseURL: "https://quiet.test", KeyCount: 1, InjectUsage: false, APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
	}
	for host, w := range want {
		g := got[host]
		g.ID, g.KeyStates, g.Version = 0, nil, 0
		if diff := cmp.Diff(w, g); diff != "" {
			t.Errorf("%s (-want +got):\n%s", host, diff)
		}
	}
}

// TestAdmin_Errors: admin errors are OpenAI-shaped JSON with fitting
// status codes, whatever Accept says, and change nothing.
func TestAdmin_Errors(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	p := "/" + adminToken
	tests := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"bad name", "POST", p + "/register/bad%20name", 400, "invalid_request"},
		{"name too long", "POST", p + "/register/" + strings.Repeat("n", 65), 400, "invalid_request"},
		{"existing user", "POST", p + "/register/alice", 409, "conflict"},
		{"bad expiry", "POST", p + "/register/bob?expires=soon", 400, "invalid_request"},
		{"past expiry", "POST", p + "/register/bob?expires=2001-01-01", 400, "invalid_request"},
		{"reset missing user", "POST", p + "/reset/bob", 404, "not_found"},
		{"reset bad name", "POST", p + "/reset/b%2Fob", 400, "invalid_request"},
		{"delete missing user", "DELETE", p + "/delete/bob", 404, "not_found"},
		{"expire missing user", "POST", p + "/expire/bob?expires=30d", 404, "not_found"},
		{"expire without a value", "POST", p + "/expire/alice", 400, "invalid_request"},
		{"expire with both", "POST", p + "/expire/alice?expires=30d&never=1", 400, "invalid_request"},
		{"expire never=maybe", "POST", p + "/expire/alice?never=maybe", 400, "invalid_request"},
		{"expire never=0 alone", "POST", p + "/expire/alice?never=0", 400, "invalid_request"},
		{"expire in the past", "POST", p + "/expire/alice?expires=2001-01-01", 400, "invalid_request"},
		{"duplicate provider key", "POST", p + "/addkey/api.openai.com/sk-upstream-openai-1", 409, "conflict"},
		{"other base URL", "POST", p + "/addkey/api.openai.com/sk-upstream-x?base_url=https://evil.test", 409, "conflict"},
		{"bad host", "POST", p + "/addkey/http:%2F%2Fx/k", 400, "invalid_request"},
		{"key with a space", "POST", p + "/addkey/api.groq.com/a%20b", 400, "invalid_request"},
		{"remove missing provider", "DELETE", p + "/provider/api.groq.com", 404, "not_found"},
		{"remove missing key", "DELETE", p + "/provider/api.openai.com/sk-not-there", 404, "not_found"},
		{"set missing provider", "POST", p + "/provider/api.groq.com?inject_usage=false", 404, "not_found"},
		{"set nothing", "POST", p + "/provider/api.openai.com", 400, "invalid_request"},
		{"set inject_usage=maybe", "POST", p + "/provider/api.openai.com?inject_usage=maybe", 400, "invalid_request"},
		{"addkey inject_usage=maybe", "POST", p + "/addkey/api.groq.com/gsk_x?inject_usage=maybe", 400, "invalid_request"},
		{"stats bad by", "GET", p + "/stats?by=color", 400, "invalid_request"},
		{"stats bad since", "GET", p + "/stats?since=yesterday", 400, "invalid_request"},
	}
	for _, tc := range tests {
		for _, accept := range []string{"", "application/json", "text/plain"} {
			t.Run(tc.name+"/"+accept, func(t *testing.T) {
				before := snap(t, h.svc)
				a := call(h, tc.method, tc.path, "", map[string]string{"Accept": accept})
				if a.status != tc.status {
					t.Fatalf("status %d, want %d; body %s", a.status, tc.status, a.body)
				}
				if code, typ := openaiError(t, a); code != tc.code || typ != "invalid_request_error" {
					t.Errorf("error %s/%s, want %s/invalid_request_error", code, typ, tc.code)
				}
				wantAdminHeaders(t, a)
				if diff := cmp.Diff(before, snap(t, h.svc)); diff != "" {
					t.Errorf("state changed (-before +after):\n%s", diff)
				}
			})
		}
	}
}

// TestAdmin_NoCORS: admin answers carry no CORS headers, preflights
// included, even from a browser origin.
func TestAdmin_NoCORS(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: adminToken, CORSOrigins: []string{"https://app.test"}}})
	browser := map[string]string{
		"Origin":                         "https://app.test",
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization",
	}
	withAuth := map[string]string{"Authorization": "Bearer " + adminToken}
	for k, v := range browser {
		withAuth[k] = v
	}
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"preflight, path token", "OPTIONS", "/" + adminToken + "/register/bob", browser, 405},
		{"preflight, bearer", "OPTIONS", "/admin/register/bob", withAuth, 405},
		{"preflight, no auth", "OPTIONS", "/admin/register/bob", browser, 403},
		{"preflight, wrong token", "OPTIONS", "/wrong/register/bob", browser, 403},
		{"list from a browser", "GET", "/" + adminToken + "/users", browser, 200},
		{"register from a browser", "POST", "/admin/register/bob", withAuth, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := call(h, tc.method, tc.path, "", tc.hdr)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", a.status, tc.status, a.body)
			}
			wantNoCORS(t, a)
		})
	}
}

// TestAdmin_NoSecrets: no admin answer but register/reset shows a user key,
// none shows a provider key, and the log holds neither, nor the token.
func TestAdmin_NoSecrets(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	p := "/" + adminToken
	auth := bearer(adminToken)
	providerKeys := []string{"sk-upstream-openai-1", "gsk_path_secret", "gsk/slash/secret", "gsk_body_secret", "sk-not-stored-secret"}
	userKeys := []string{h.key}
	var bodies []string
	do := func(method, path, body string, hdr map[string]string) answer {
		a := call(h, method, path, body, hdr)
		bodies = append(bodies, a.body)
		return a
	}
	takeKey := func(a answer) {
		bodies = bodies[:len(bodies)-1]
		userKeys = append(userKeys, strings.TrimSpace(a.body))
	}
	takeKey(do("POST", p+"/register/bob", "", nil))
	takeKey(do("POST", p+"/reset/bob", "", nil))
	takeKey(do("POST", p+"/reset/alice", "", nil))
	do("POST", p+"/register/bob", "", nil)
	do("POST", p+"/addkey/api.groq.com/gsk_path_secret", "", nil)
	do("POST", p+"/addkey/api.groq.com/gsk_path_secret", "", nil)
	do("POST", p+"/addkey/api.groq.com/gsk%2Fslash%2Fsecret", "", nil)
	do("POST", "/admin/addkey/api.groq.com", `{"key":"gsk_body_secret"}`, auth)
	do("POST", "/admin/addkey/api.groq.com", `{"key":"gsk_body_secret"}`, auth)
	do("POST", "/admin/addkey/api.groq.com", `{"key":"gsk_body_secret","base_url":"https://other.test"}`, auth)
	do("POST", "/admin/addkey/api.groq.com", `{"key":"gsk_body_secret",}`, auth)
	do("POST", "/admin/addkey/api.groq.com", `{"key":["gsk_body_secret"]}`, auth)
	do("POST", "/admin/addkey/api.groq.com", `{"gsk_body_secret":1}`, auth)
	do("POST", p+"/addkey/bad%20host/sk-not-stored-secret", "", nil)
	do("DELETE", p+"/provider/api.groq.com/sk-not-stored-secret", "", nil)
	do("DELETE", "/admin/provider/api.groq.com", `{"key":"sk-not-stored-secret"}`, auth)
	do("DELETE", "/admin/provider/api.groq.com", `{"key":"gsk_body_secret"}`, auth)
	do("GET", p+"/users", "", nil)
	do("GET", "/admin/providers", "", auth)
	do("GET", p+"/stats?by=user", "", nil)
	do("GET", p+"/stats?user=sk-not-stored-secret", "", nil)
	do("DELETE", p+"/delete/bob", "", nil)
	do("POST", "/wrong/addkey/api.groq.com/sk-not-stored-secret", "", nil)

	if p, err := h.svc.Provider(context.Background(), "api.groq.com"); err != nil || len(p.Keys) != 2 {
		t.Errorf("api.groq.com has %d keys (%v), want the two path keys", len(p.Keys), err)
	}
	logs := h.logs.String()
	for _, s := range append(append([]string{adminToken}, providerKeys...), userKeys...) {
		for _, b := range bodies {
			if s != adminToken && strings.Contains(b, s) {
				t.Errorf("an answer holds secret %q: %s", s, b)
			}
		}
		if strings.Contains(logs, s) {
			t.Errorf("the log holds secret %q", s)
		}
	}
	for _, frag := range []string{"slash", "path_secret"} {
		if strings.Contains(logs, frag) {
			t.Errorf("the log holds part of a key, %q:\n%s", frag, logs)
		}
	}
	if !strings.Contains(logs, `/***/addkey/api.groq.com/***`) {
		t.Errorf("the log has no redacted addkey line:\n%s", logs)
	}
}

// TestAdmin_Stats: GET /{token}/stats answers the CLI's stats rows.
func TestAdmin_Stats(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	h.createUser("bob") // a user without usage
	res := h.do("POST", "/v1/chat/completions", chatBody, bearer(h.key))
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("chat: %d %s", res.StatusCode, body)
	}
	h.flushUsage()
	// An unknown user is an error, not an empty answer.
	for _, form := range routeForms() {
		if a := call(h, "GET", form.prefix+"/stats?user=nobody", "", form.hdr); a.status != 404 || !strings.Contains(a.body, `"not_found"`) {
			t.Errorf("%s: unknown user: status %d %s", form.name, a.status, a.body)
		}
	}
	row := `"requests":1,"errors":0,"partial":0,"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost_usd":null,"unmetered":0}`
	tests := []struct {
		name, query, want string
	}{
		{"totals", "", `[{` + row + `]`},
		{"by user", "?by=user", `[{"user":"alice",` + row + `]`},
		{"by model", "?by=model", `[{"model":"gpt-4o-mini",` + row + `]`},
		{"by provider", "?by=provider", `[{"provider":"api.openai.com",` + row + `]`},
		{"one user", "?user=alice&by=user", `[{"user":"alice",` + row + `]`},
		{"another user", "?user=bob&by=user", `[]`},
		{"since the future", "?since=2099-01-01&by=user", `[]`},
		{"since a day ago", "?since=1d&by=user", `[{"user":"alice",` + row + `]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, form := range routeForms() {
				a := call(h, "GET", form.prefix+"/stats"+tc.query, "", form.hdr)
				if a.status != 200 {
					t.Fatalf("%s: status %d; body %s", form.name, a.status, a.body)
				}
				if diff := cmp.Diff(tc.want+"\n", a.body); diff != "" {
					t.Errorf("%s: body (-want +got):\n%s", form.name, diff)
				}
				if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type = %q, want JSON", ct)
				}
				wantAdminHeaders(t, a)
			}
		})
	}
	if rows := h.stats("user"); len(rows) != 1 {
		t.Errorf("service stats = %+v", rows)
	}
}
