package server_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// relFuzzEnv is the full handler in front of a fake upstream, built once per
// fuzz target. Inputs name the valid key as {KEY}, the admin token as
// {TOKEN} and the upstream's address as {UP}.
type relFuzzEnv struct {
	handler  http.Handler
	fake     *fakeai.Server
	svc      *admin.Service
	dials    *relDialRecorder
	logs     *syncBuffer
	key      string
	token    string
	upstream string
}

func newRelFuzzEnv(f *testing.F) *relFuzzEnv {
	f.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(f.TempDir(), "aiproxy.db"))
	if err != nil {
		f.Fatal(err)
	}
	e := &relFuzzEnv{svc: admin.New(db), fake: fakeai.New(), dials: &relDialRecorder{}, logs: &syncBuffer{}, token: "Fuzz-Admin-Token-0123456789abcdef"}
	up := httptest.NewServer(e.fake)
	e.upstream = up.Listener.Addr().String()
	e.dials.allow(e.upstream)
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := usage.New(e.svc.RecordUsage, log, 100000)
	px := proxy.New(e.svc, rec, log, proxy.Config{Transport: e.dials.transport()})
	e.handler = server.New(e.svc, px, log, server.Config{AccessToken: e.token})
	f.Cleanup(func() {
		up.CloseClientConnections()
		up.Close()
		px.CloseIdle()
		rec.Close(context.Background())
		db.Close()
	})
	if err := e.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.openai.com", Key: "sk-upstream-fuzz-secret", BaseURL: up.URL}); err != nil {
		f.Fatal(err)
	}
	if e.key, err = e.svc.CreateUser(ctx, "alice", admin.Expiry{}); err != nil {
		f.Fatal(err)
	}
	return e
}

func (e *relFuzzEnv) expand(s string) string {
	return strings.NewReplacer("{KEY}", e.key, "{TOKEN}", e.token, "{UP}", e.upstream).Replace(s)
}

// serve runs one request through the handler and returns the recorder; a
// panic other than http.ErrAbortHandler fails the test.
func (e *relFuzzEnv) serve(t *testing.T, r *http.Request) (rec *httptest.ResponseRecorder) {
	t.Helper()
	rec = httptest.NewRecorder()
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			t.Fatalf("panic escaped the handler for %s %q: %v", r.Method, r.URL.Path, v)
		}
	}()
	e.handler.ServeHTTP(rec, r)
	return rec
}

// check runs the invariants every answer keeps.
func (e *relFuzzEnv) check(t *testing.T, r *http.Request, rec *httptest.ResponseRecorder, upstreamBefore int, logsBefore int) {
	t.Helper()
	body := rec.Body.String()
	if rec.Code >= 400 && e.fake.Count() == upstreamBefore {
		if _, ok := relOpenAIError(body); !ok {
			t.Errorf("%s %q: aiproxy's own %d answer is not an OpenAI error: %q", r.Method, r.URL.Path, rec.Code, body)
		}
	}
	if rec.Code >= 500 && rec.Code != http.StatusBadGateway && rec.Code != http.StatusGatewayTimeout {
		t.Errorf("%s %q: status %d: %q", r.Method, r.URL.Path, rec.Code, body)
	}
	if bad := e.dials.forbidden(); len(bad) > 0 {
		// An admin route may have registered a provider (the seeds hold
		// the token); a dial to a registered base URL is allowed. The
		// recorder refuses every such dial, so nothing leaves loopback.
		reg := e.registered(t)
		for _, a := range bad {
			if !reg[a] {
				t.Fatalf("dialled unregistered address %s (registered: %v)", a, reg)
			}
		}
	}
	logs := e.logs.String()
	if len(logs) > logsBefore {
		tail := logs[logsBefore:]
		if strings.Contains(tail, `"msg":"panic"`) {
			t.Errorf("%s %q: a panic was recovered: %s", r.Method, r.URL.Path, tail)
		}
		secrets := []string{e.key, "sk-upstream-fuzz-secret"}
		if seg, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); !relProxySegment(seg) {
			// A proxied path is the client's to choose and is logged as
			// sent; anywhere else the token is redacted.
			secrets = append(secrets, e.token)
		}
		for _, s := range secrets {
			if strings.Contains(tail, s) {
				t.Errorf("%s %q: a secret reached the log", r.Method, r.URL.Path)
			}
		}
	}
	if strings.Contains(body, "sk-upstream-fuzz-secret") {
		t.Errorf("%s %q: the provider key reached the client", r.Method, r.URL.Path)
	}
}

// registered returns the host:port of every registered provider's base URL.
func (e *relFuzzEnv) registered(t *testing.T) map[string]bool {
	t.Helper()
	provs, err := e.svc.ListProviders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, p := range provs {
		u, err := url.Parse(p.BaseURL)
		if err != nil {
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		out[net.JoinHostPort(u.Hostname(), port)] = true
	}
	return out
}

// relProxySegment reports whether a first path segment routes to the proxy.
func relProxySegment(seg string) bool {
	if seg == "openai" || strings.ContainsAny(seg, ".:") {
		return true
	}
	if len(seg) < 2 || seg[0] != 'v' {
		return false
	}
	return strings.Trim(seg[1:], "0123456789") == ""
}

var relFuzzMethods = []string{"GET", "POST", "DELETE", "PUT", "OPTIONS", "HEAD", "PATCH"}

// FuzzServeHTTP sends random paths, X-Host-Final and Authorization values
// through the whole handler: it never panics, its own errors are OpenAI
// JSON, it dials nothing but the registered upstream, and no secret reaches
// the log.
func FuzzServeHTTP(f *testing.F) {
	e := newRelFuzzEnv(f)
	seeds := []struct {
		method          byte
		path, xhf, auth string
	}{
		{1, "/v1/chat/completions", "", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "api.openai.com", "Bearer {KEY}"},
		{1, "/openai/v1/chat/completions", "API.OPENAI.COM.", "bearer {KEY}"},
		{1, "/api.openai.com/v1/chat/completions", "", "Bearer {KEY}"},
		{1, "/{UP}/v1/chat/completions", "", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "{UP}", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "169.254.169.254", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "api.openai.com#@127.0.0.9", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "[::1]:80", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "a.com\r\nX: y", "Bearer {KEY}"},
		{1, "/v1/chat/completions", "", "Bearer ' OR 1=1--"},
		{1, "/v1/chat/completions", "", "Bearer sk-cfw\x00"},
		{1, "/v1/chat/completions", "", ""},
		{0, "/me", "", "Bearer {KEY}"},
		{0, "/healthz", "", ""},
		{1, "/{TOKEN}/register/bob", "", ""},
		{1, "/{TOKEN}/addkey/evil.example/sk-x", "", ""},
		{0, "/{TOKEN}/users", "", ""},
		{2, "/admin/delete/alice", "", "Bearer wrong"},
		{0, "/admin/users", "", "Bearer {TOKEN}"},
		{0, "/debug/pprof/", "", ""},
		{0, "/healthz/{TOKEN}", "", ""},
		{3, "/me/{TOKEN}/users", "", "Bearer {KEY}"},
		{0, "/{TOKEN}", "", ""},
		{0, "/admin/{TOKEN}/users", "", ""},
		{1, "/{TOKEN}/addkey/x.test/{TOKEN}", "", ""},
		{0, "/v1/../{TOKEN}/users", "", ""},
		{0, "/me/../{TOKEN}/users", "", ""},
		{1, "//api.openai.com/v1/x", "", "Bearer {KEY}"},
		{1, "/v1%2F..%2F..%2Fx", "", "Bearer {KEY}"},
		{1, "/api.openai.com:0/v1", "", "Bearer {KEY}"},
		{1, "/evil.example/v1/chat/completions", "", "Bearer {KEY}"},
		{4, "/v1/chat/completions", "", ""},
		{0, "/v99999999999999999999/x", "evil", "Bearer {KEY}"},
		{0, "/%zz", "", ""},
		{0, "*", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.xhf, s.auth)
	}
	f.Fuzz(func(t *testing.T, method byte, path, xhf, auth string) {
		path, xhf, auth = e.expand(path), e.expand(xhf), e.expand(auth)
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		u, err := url.ParseRequestURI(path)
		if err != nil || len(path) > 8<<10 {
			return // Go's server answers 400 itself
		}
		r := httptest.NewRequest(relFuzzMethods[int(method)%len(relFuzzMethods)], "http://aiproxy.test/", strings.NewReader(chatBody))
		r.URL = u
		r.RequestURI = path
		r.Header.Set("Content-Type", "application/json")
		if xhf != "" {
			r.Header["X-Host-Final"] = []string{xhf}
		}
		if auth != "" {
			r.Header["Authorization"] = []string{auth}
		}
		upBefore, logsBefore := e.fake.Count(), len(e.logs.String())
		rec := e.serve(t, r)
		e.check(t, r, rec, upBefore, logsBefore)
		if loc := rec.Header().Get("Location"); loc != "" && !strings.Contains(path, e.token) && strings.Contains(loc, e.token) {
			t.Errorf("Location %q holds the admin token", loc)
		}
	})
}

// FuzzAuthorizationHeader: any Authorization value is either the valid key
// (200) or refused with 401 invalid_api_key, on the proxy and on /me; never
// a 500, a panic, or a change to the users.
func FuzzAuthorizationHeader(f *testing.F) {
	e := newRelFuzzEnv(f)
	for _, s := range []string{
		"Bearer {KEY}", "bearer {KEY}", "BEARER  {KEY}  ", "Bearer {KEY}\t", "Bearer\t{KEY}",
		"Bearer {KEY}x", "Bearer x{KEY}", "Bearer sk-cfw", "Bearer " + strings.Repeat("a", 10000),
		"Bearer ' OR 1=1--", "Bearer ' OR '1'='1", "Bearer \x00", "Bearer \xff\xfe", "Basic {KEY}",
		"{KEY}", "", "Bearer", "Bearer ", "Bearer sk-cfw" + strings.Repeat("A", 45),
		"Bearer {KEY}\u00a0", "Bearer \u2028{KEY}",
	} {
		f.Add(s)
	}
	ctx := context.Background()
	users, err := e.svc.ListUsers(ctx)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, auth string) {
		auth = e.expand(auth)
		valid := len(auth) >= 7 && strings.EqualFold(auth[:7], "bearer ") && strings.TrimSpace(auth[7:]) == e.key
		for _, target := range []struct{ method, path string }{{"POST", "/v1/chat/completions"}, {"GET", "/me"}} {
			r := httptest.NewRequest(target.method, "http://aiproxy.test"+target.path, strings.NewReader(chatBody))
			r.Header.Set("Content-Type", "application/json")
			r.Header["Authorization"] = []string{auth}
			upBefore, logsBefore := e.fake.Count(), len(e.logs.String())
			rec := e.serve(t, r)
			e.check(t, r, rec, upBefore, logsBefore)
			switch {
			case valid && rec.Code != 200:
				t.Errorf("%s with the valid key (%q): %d %s", target.path, auth, rec.Code, rec.Body)
			case !valid && rec.Code != 401:
				t.Errorf("%s with %q: %d %s, want 401", target.path, auth, rec.Code, rec.Body)
			case !valid:
				if code, _ := relOpenAIError(rec.Body.String()); code != "invalid_api_key" {
					t.Errorf("%s with %q: code %q, want invalid_api_key", target.path, auth, code)
				}
			}
			if !valid && utf8.ValidString(auth) && len(auth) > 20 && strings.Contains(rec.Body.String(), auth) {
				t.Errorf("%s: the refusal echoes the Authorization value", target.path)
			}
		}
		if now, err := e.svc.ListUsers(ctx); err != nil || len(now) != len(users) || now[0].KeyHint != users[0].KeyHint {
			t.Fatalf("users changed: %v %v", now, err)
		}
	})
}
