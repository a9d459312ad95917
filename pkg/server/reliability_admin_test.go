package server_test

// KEY-7 and KEY-8 against the admin routes of admin.go. What admin_test.go
// already proves is not repeated: the single 403 for wrong tokens and
// unknown paths (TestAdmin_Refused), the throttle and another address
// (TestAdmin_Throttle), no CORS (TestAdmin_NoCORS), no secret in answers or
// logs (TestAdmin_NoSecrets).

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/server"
)

const relAdminToken = "Key7-Admin-Token-0123456789abcdefXYZ"

// relAdminSnapshot is every user and provider, for "nothing changed".
func relAdminSnapshot(t *testing.T, h *harness) string {
	t.Helper()
	users, err := h.svc.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	provs, err := h.svc.ListProviders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, u := range users {
		b.WriteString(u.Name + " " + u.KeyHint + "\n")
	}
	for _, p := range provs {
		b.WriteString(p.Host + " " + p.BaseURL + " " + strings.Join(p.KeyHints, ",") + "\n")
	}
	return b.String()
}

// TestKEY7_AdminAnswersAreContained: every admin answer past the token check
// says Cache-Control: no-store and Referrer-Policy: no-referrer; admin
// routes change state only by POST and DELETE; the token and the provider
// keys of every route, in both forms, stay out of the log.
func TestKEY7_AdminAnswersAreContained(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: relAdminToken}})
	tok := "/" + relAdminToken
	auth := relHdr("Authorization", "Bearer "+relAdminToken)
	routes := []struct {
		method, path, body string
		hdr                http.Header
	}{
		{"POST", tok + "/register/bob", "", nil},
		{"POST", tok + "/reset/bob", "", nil},
		{"POST", tok + "/expire/bob?expires=30d", "", nil},
		{"POST", tok + "/addkey/k7.test/sk-key7-path-secret", "", nil},
		{"POST", "/admin/addkey/k7.test", `{"key":"sk-key7-body-secret"}`, auth},
		{"POST", tok + "/provider/k7.test?inject_usage=false", "", nil},
		{"GET", tok + "/users", "", nil},
		{"GET", "/admin/providers", "", auth},
		{"GET", tok + "/stats?by=user", "", nil},
		{"DELETE", tok + "/provider/k7.test/sk-key7-path-secret", "", nil},
		{"DELETE", "/admin/provider/k7.test", "", auth},
		{"DELETE", tok + "/delete/bob", "", nil},
		{"POST", tok + "/register/bad%20name", "", nil}, // an error answer
		{"GET", tok + "/register/x", "", nil},           // 405
	}
	for _, r := range routes {
		a := relSend(t, nil, r.method, h.proxy.URL+r.path, r.body, r.hdr)
		if a.status == 403 {
			t.Errorf("%s %s: 403 with the right token", r.method, r.path)
			continue
		}
		if got := a.header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s %s: Cache-Control %q, want no-store", r.method, r.path, got)
		}
		if got := a.header.Get("Referrer-Policy"); got != "no-referrer" {
			t.Errorf("%s %s: Referrer-Policy %q, want no-referrer", r.method, r.path, got)
		}
	}
	// GET and HEAD never change state; every state-changing route refuses them.
	before := relAdminSnapshot(t, h)
	for _, p := range []string{"/register/x", "/reset/alice", "/delete/alice", "/expire/alice?never=1", "/addkey/x.test/sk-x", "/provider/api.openai.com"} {
		for _, m := range []string{"GET", "HEAD"} {
			a := relSend(t, nil, m, h.proxy.URL+tok+p, "", nil)
			if a.status != 405 {
				t.Errorf("%s %s: %d, want 405", m, p, a.status)
			}
		}
	}
	if after := relAdminSnapshot(t, h); after != before {
		t.Errorf("GET/HEAD changed state:\n%s\n→\n%s", before, after)
	}
	logs := h.logs.String()
	for _, s := range []string{relAdminToken, url.PathEscape(relAdminToken), "sk-key7-path-secret", "sk-key7-body-secret", "key7-path"} {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds %q", s)
		}
	}
}

// TestKEY8_AdminPathParametersValidated: hostile names get 400 (or, when the
// path no longer matches a route, the single 403), change nothing, and
// paths that Go's ServeMux would clean never answer a redirect that repeats
// the token in Location.
func TestKEY8_AdminPathParametersValidated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: relAdminToken}})
	tok := "/" + relAdminToken
	names := []struct {
		name, path string
		structural bool // the name changes the route: 403/404 are fine too
	}{
		{"dot dot slash", "../x", true},
		{"escaped dot dot", "%2e%2e", true},
		{"escaped slash", "a%2Fb", false},
		{"slash", "a/b", true},
		{"NUL", "%00", false},
		{"sql", "'%20OR%201=1--", false},
		{"sql quote", "%27", false},
		{"10k", strings.Repeat("a", 10000), false},
		{"65 chars", strings.Repeat("a", 65), false},
		{"e acute", "%C3%A9", false},
		{"empty", "", true},
		{"trailing space", "bob%20", false},
		{"leading space", "%20bob", false},
		{"CRLF", "bob%0d%0a", false},
		{"tab", "bob%09", false},
		{"percent", "bob%25", false},
		{"semicolon", "bob;x", false},
		{"question mark", "bob%3Fx", false},
		{"hash", "bob%23x", false},
		{"invalid UTF-8", "%ff", false},
	}
	ctx := context.Background()
	before := relAdminSnapshot(t, h)
	for _, tc := range names {
		for _, verb := range []struct{ method, route string }{
			{"POST", "/register/"}, {"POST", "/reset/"}, {"DELETE", "/delete/"}, {"POST", "/expire/"},
		} {
			for _, prefix := range []string{tok, "/admin"} {
				var hdr http.Header
				if prefix == "/admin" {
					hdr = relHdr("Authorization", "Bearer "+relAdminToken)
				}
				path := prefix + verb.route + tc.path
				if verb.route == "/expire/" {
					path += "?never=1"
				}
				noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				a := relSend(t, noFollow, verb.method, h.proxy.URL+path, "", hdr)
				ok := a.status == 400 || tc.structural && (a.status == 403 || a.status == 404)
				if !ok {
					t.Errorf("%s %s (%s): %d %.120q, want 400", verb.method, verb.route, tc.name, a.status, a.body)
				}
				if loc := a.header.Get("Location"); strings.Contains(loc, relAdminToken) {
					t.Errorf("%s %s (%s): Location %q repeats the token", verb.method, verb.route, tc.name, loc)
				}
			}
		}
	}
	if after := relAdminSnapshot(t, h); after != before {
		t.Errorf("hostile names changed state:\n%s\n→\n%s", before, after)
	}
	// A quoted delete deletes nothing (the name is a parameter, not SQL).
	users, _ := h.svc.ListUsers(ctx)
	relSend(t, nil, "DELETE", h.proxy.URL+tok+"/delete/'%20OR%20'1'='1", "", nil)
	if now, _ := h.svc.ListUsers(ctx); len(now) != len(users) {
		t.Errorf("users %d → %d after a quoted delete", len(users), len(now))
	}

	// Paths the mux would clean: no redirect may carry the token.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{
		tok + "//users",
		tok + "/./users",
		tok + "/users/",
		tok + "/x/../users",
		"/" + tok + "/users",
		"/me/.." + tok + "/users",
		tok + "/register//bob",
		tok + "/addkey/k.test//sk-key8-secret",
	} {
		for _, m := range []string{"GET", "POST"} {
			a := relSend(t, noFollow, m, h.proxy.URL+p, "", nil)
			if a.status >= 300 && a.status < 400 && strings.Contains(a.header.Get("Location"), relAdminToken) {
				t.Errorf("%s %s: %d redirect to %q repeats the token (a browser or proxy logs it again)", m, p, a.status, a.header.Get("Location"))
			}
			if strings.Contains(a.body, relAdminToken) {
				t.Errorf("%s %s: the body repeats the token: %.200q", m, p, a.body)
			}
		}
	}
	if after := relAdminSnapshot(t, h); after != before {
		t.Errorf("cleaned paths changed state:\n%s\n→\n%s", before, after)
	}
	logs := h.logs.String()
	if strings.Contains(logs, relAdminToken) || strings.Contains(logs, "sk-key8-secret") {
		t.Errorf("the log holds the token or a key")
	}

}
