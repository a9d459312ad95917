package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// The parity tests (STYLE.md §2) run every admin operation through the CLI
// and through the HTTP admin routes, each on a fresh database, and compare
// what they leave behind and how they fail. An operation added to one
// transport only shows up as a missing row (TestParity_everyCommandHasARow).

const parityToken = "parity-token-0123456789"

// paritySeed is the state every row starts from: alice, whose key expires
// in 2098, and two providers, one with two keys.
func paritySeed(t *testing.T, path string) {
	t.Helper()
	svc := openService(t, path)
	ctx := t.Context()
	exp, err := svc.ExpiryFrom("2098-01-01")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateUser(ctx, "alice", exp); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][3]string{
		{"api.openai.com", "sk-seed-1", ""},
		{"api.openai.com", "sk-seed-2", ""},
		{"local.test", "lk-seed-1", "http://127.0.0.1:9"},
	} {
		alias := ""
		if p[0] == "local.test" {
			alias = "local"
		}
		if err := svc.AddProviderKey(ctx, admin.ProviderKey{Host: p[0], Key: p[1], BaseURL: p[2], Alias: alias}); err != nil {
			t.Fatal(err)
		}
	}
	in, out := 0.5, 1.5
	if _, err := svc.SetPrice(ctx, admin.PriceInput{Model: "local/model", Input: &in, Output: &out}); err != nil {
		t.Fatal(err)
	}
}

// newParityServer serves aiproxy, admin routes on, over the database at path.
func newParityServer(t *testing.T, path string) *httptest.Server {
	t.Helper()
	svc := openService(t, path)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := usage.New(svc.RecordUsage, log, 100)
	px := proxy.New(svc, rec, log, proxy.Config{})
	srv := httptest.NewServer(server.New(svc, px, log, server.Config{AccessToken: parityToken}))
	t.Cleanup(func() {
		srv.Close()
		px.CloseIdle()
		rec.Close(context.Background())
	})
	return srv
}

// parityUser and parityProvider are the parts of the state both transports
// must agree on: not ids, creation times or user key hints, which differ
// between two runs anyway. Provider keys are compared whole.
type parityUser struct {
	Name      string
	ExpiresAt *time.Time
	Limits    aiproxy.LimitsView
}

type parityProvider struct {
	Host, BaseURL        string
	InjectUsage          bool
	Alias, APIRoot, Auth string
	Headers              map[string]string
	Keys                 []string
}

type parityState struct {
	Users     []parityUser
	Providers []parityProvider
	Prices    []aiproxy.Price
	Defaults  aiproxy.LimitsView // the limits of `*`
	// Audit is each audit record made by the row (not the seed's, which
	// have no source) as "action target result": the same from either
	// transport.
	Audit []string
}

func readParityState(t *testing.T, path string) parityState {
	t.Helper()
	svc := openService(t, path)
	ctx := t.Context()
	users, err := svc.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	provs, err := svc.ListProviders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s parityState
	if s.Prices, err = svc.ListPrices(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		s.Users = append(s.Users, parityUser{u.Name, u.ExpiresAt, u.Limits})
	}
	defaults, err := svc.UserRow(ctx, "*")
	if err != nil {
		t.Fatal(err)
	}
	s.Defaults = defaults.Limits
	for _, p := range provs {
		full, err := svc.Provider(ctx, p.Host)
		if err != nil {
			t.Fatal(err)
		}
		ks := slices.Sorted(slices.Values(full.Keys))
		s.Providers = append(s.Providers, parityProvider{p.Host, p.BaseURL, p.InjectUsage, p.Alias, p.APIRoot, p.Auth, p.Headers, ks})
	}
	recs, err := svc.AuditLog(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Source != "" {
			s.Audit = append(s.Audit, r.Action+" "+r.Target+" "+r.Result)
		}
	}
	return s
}

// parityRow is one admin operation in both transports' words.
type parityRow struct {
	name  string
	cli   []string // after --db PATH
	stdin string
	// HTTP: method and path after /{token}, or, with body, after /admin
	// with the token as a bearer.
	method, path, body string
	kind               string // "" for success, else the aiproxy error code
	out                string // success output: "key", "ok" or "json"
}

var parityRows = []parityRow{
	{name: "create", cli: []string{"user", "create", "bob"}, method: "POST", path: "/register/bob", out: "key"},
	{name: "create with expiry", cli: []string{"user", "create", "bob", "--expires", "2099-01-31"}, method: "POST", path: "/register/bob?expires=2099-01-31", out: "key"},
	{name: "create existing", cli: []string{"user", "create", "alice"}, method: "POST", path: "/register/alice", kind: aiproxy.ECONFLICT},
	{name: "create bad name", cli: []string{"user", "create", "bad name"}, method: "POST", path: "/register/bad%20name", kind: aiproxy.EINVALID},
	{name: "create expired", cli: []string{"user", "create", "bob", "--expires", "2001-01-01"}, method: "POST", path: "/register/bob?expires=2001-01-01", kind: aiproxy.EINVALID},
	{name: "create bad expiry", cli: []string{"user", "create", "bob", "--expires", "soon"}, method: "POST", path: "/register/bob?expires=soon", kind: aiproxy.EINVALID},
	{name: "reset", cli: []string{"user", "reset", "alice"}, method: "POST", path: "/reset/alice", out: "key"},
	{name: "reset with expiry", cli: []string{"user", "reset", "alice", "--expires", "2099-01-31T12:00:00Z"}, method: "POST", path: "/reset/alice?expires=2099-01-31T12:00:00Z", out: "key"},
	{name: "reset missing user", cli: []string{"user", "reset", "bob"}, method: "POST", path: "/reset/bob", kind: aiproxy.ENOTFOUND},
	{name: "delete", cli: []string{"user", "delete", "alice"}, method: "DELETE", path: "/delete/alice", out: "ok"},
	{name: "delete missing user", cli: []string{"user", "delete", "bob"}, method: "DELETE", path: "/delete/bob", kind: aiproxy.ENOTFOUND},
	{name: "delete bad name", cli: []string{"user", "delete", "a/b"}, method: "DELETE", path: "/delete/a%2Fb", kind: aiproxy.EINVALID},
	{name: "expire at a date", cli: []string{"user", "expire", "alice", "--at", "2099-01-31"}, method: "POST", path: "/expire/alice?expires=2099-01-31", out: "ok"},
	{name: "expire at a time", cli: []string{"user", "expire", "alice", "--at", "2099-01-31T12:00:00Z"}, method: "POST", path: "/expire/alice?expires=2099-01-31T12:00:00Z", out: "ok"},
	{name: "expire never", cli: []string{"user", "expire", "alice", "--never"}, method: "POST", path: "/expire/alice?never=1", out: "ok"},
	{name: "expire missing user", cli: []string{"user", "expire", "bob", "--never"}, method: "POST", path: "/expire/bob?never=1", kind: aiproxy.ENOTFOUND},
	{name: "expire in the past", cli: []string{"user", "expire", "alice", "--at", "2001-01-01"}, method: "POST", path: "/expire/alice?expires=2001-01-01", kind: aiproxy.EINVALID},
	{name: "list users", cli: []string{"user", "list", "--json"}, method: "GET", path: "/users", out: "json"},

	{name: "add key, new host", cli: []string{"provider", "add", "api.groq.com", "gsk_1"}, method: "POST", path: "/addkey/api.groq.com/gsk_1", out: "ok"},
	{name: "add key, new host with base URL", cli: []string{"provider", "add", "api.groq.com", "gsk_1", "--base-url", "https://api.groq.com/openai"}, method: "POST", path: "/addkey/api.groq.com/gsk_1?base_url=https://api.groq.com/openai", out: "ok"},
	{name: "add key, known host keeps its URL", cli: []string{"provider", "add", "local.test", "lk-2"}, method: "POST", path: "/addkey/local.test/lk-2", out: "ok"},
	{name: "add key in a body", cli: []string{"provider", "add", "local.test", "lk-2"}, method: "POST", path: "/addkey/local.test", body: `{"key":"lk-2"}`, out: "ok"},
	{name: "add key from stdin", cli: []string{"provider", "add", "local.test", "-"}, stdin: "lk-2\n", method: "POST", path: "/addkey/local.test", body: `{"key":"lk-2"}`, out: "ok"},
	{name: "add key without usage injection", cli: []string{"provider", "add", "api.groq.com", "gsk_1", "--no-inject-usage"}, method: "POST", path: "/addkey/api.groq.com/gsk_1?inject_usage=false", out: "ok"},
	{name: "add key, mixed-case host", cli: []string{"provider", "add", "API.OpenAI.com.", "sk-seed-3"}, method: "POST", path: "/addkey/API.OpenAI.com./sk-seed-3", out: "ok"},
	{name: "add same key again", cli: []string{"provider", "add", "api.openai.com", "sk-seed-1"}, method: "POST", path: "/addkey/api.openai.com/sk-seed-1", kind: aiproxy.ECONFLICT},
	{name: "add key with another base URL", cli: []string{"provider", "add", "local.test", "lk-2", "--base-url", "https://elsewhere.test"}, method: "POST", path: "/addkey/local.test/lk-2?base_url=https://elsewhere.test", kind: aiproxy.ECONFLICT},
	{name: "add key, bad host", cli: []string{"provider", "add", "bad host", "k"}, method: "POST", path: "/addkey/bad%20host/k", kind: aiproxy.EINVALID},
	{name: "add key, bad base URL", cli: []string{"provider", "add", "new.test", "k", "--base-url", "ftp://new.test"}, method: "POST", path: "/addkey/new.test/k?base_url=ftp://new.test", kind: aiproxy.EINVALID},
	{name: "list providers", cli: []string{"provider", "list", "--json"}, method: "GET", path: "/providers", out: "json"},
	{name: "remove host", cli: []string{"provider", "remove", "api.openai.com"}, method: "DELETE", path: "/provider/api.openai.com", out: "ok"},
	{name: "remove one key", cli: []string{"provider", "remove", "api.openai.com", "sk-seed-1"}, method: "DELETE", path: "/provider/api.openai.com/sk-seed-1", out: "ok"},
	{name: "remove one key in a body", cli: []string{"provider", "remove", "api.openai.com", "sk-seed-1"}, method: "DELETE", path: "/provider/api.openai.com", body: `{"key":"sk-seed-1"}`, out: "ok"},
	{name: "remove the last key", cli: []string{"provider", "remove", "local.test", "lk-seed-1"}, method: "DELETE", path: "/provider/local.test/lk-seed-1", out: "ok"},
	{name: "remove missing host", cli: []string{"provider", "remove", "api.groq.com"}, method: "DELETE", path: "/provider/api.groq.com", kind: aiproxy.ENOTFOUND},
	{name: "remove missing key", cli: []string{"provider", "remove", "api.openai.com", "sk-nope"}, method: "DELETE", path: "/provider/api.openai.com/sk-nope", kind: aiproxy.ENOTFOUND},
	{name: "set inject usage", cli: []string{"provider", "set", "api.openai.com", "--inject-usage=false"}, method: "POST", path: "/provider/api.openai.com?inject_usage=false", out: "row"},
	{name: "set inject usage in a body", cli: []string{"provider", "set", "api.openai.com", "--inject-usage=false"}, method: "POST", path: "/provider/api.openai.com", body: `{"inject_usage":false}`, out: "row"},
	{name: "set alias", cli: []string{"provider", "set", "api.openai.com", "--alias", "OAI"}, method: "POST", path: "/provider/api.openai.com", body: `{"alias":"OAI"}`, out: "row"},
	{name: "set by alias, remove it", cli: []string{"provider", "set", "local", "--alias", ""}, method: "POST", path: "/provider/local", body: `{"alias":""}`, out: "row"},
	{name: "set base URL", cli: []string{"provider", "set", "local.test", "--base-url", "http://127.0.0.1:8/"}, method: "POST", path: "/provider/local.test", body: `{"base_url":"http://127.0.0.1:8/"}`, out: "row"},
	{name: "set API root, auth and headers", cli: []string{"provider", "set", "api.openai.com", "--api-root", "/openai/v1", "--auth", "x-api-key", "--header", "OpenAI-Project: proj_1", "--header", "x-team:a"},
		method: "POST", path: "/provider/api.openai.com", body: `{"api_root":"/openai/v1","auth":"x-api-key","headers":{"OpenAI-Project":"proj_1","x-team":"a"}}`, out: "row"},
	{name: "set alias taken by a host", cli: []string{"provider", "set", "api.openai.com", "--alias", "local.test"}, method: "POST", path: "/provider/api.openai.com", body: `{"alias":"local.test"}`, kind: aiproxy.ECONFLICT},
	{name: "set alias taken by an alias", cli: []string{"provider", "set", "api.openai.com", "--alias", "LOCAL"}, method: "POST", path: "/provider/api.openai.com", body: `{"alias":"LOCAL"}`, kind: aiproxy.ECONFLICT},
	{name: "set reserved alias", cli: []string{"provider", "set", "api.openai.com", "--alias", "v1"}, method: "POST", path: "/provider/api.openai.com", body: `{"alias":"v1"}`, kind: aiproxy.EINVALID},
	{name: "set alias that is no path segment", cli: []string{"provider", "set", "api.openai.com", "--alias", "a/b"}, method: "POST", path: "/provider/api.openai.com", body: `{"alias":"a/b"}`, kind: aiproxy.EINVALID},
	{name: "set unknown auth", cli: []string{"provider", "set", "api.openai.com", "--auth", "basic"}, method: "POST", path: "/provider/api.openai.com", body: `{"auth":"basic"}`, kind: aiproxy.EINVALID},
	{name: "set Authorization header", cli: []string{"provider", "set", "api.openai.com", "--header", "Authorization: Bearer x"}, method: "POST", path: "/provider/api.openai.com", body: `{"headers":{"Authorization":"Bearer x"}}`, kind: aiproxy.EINVALID},
	{name: "set base URL that does not parse", cli: []string{"provider", "set", "api.openai.com", "--base-url", "ftp://x"}, method: "POST", path: "/provider/api.openai.com", body: `{"base_url":"ftp://x"}`, kind: aiproxy.EINVALID},
	{name: "add key with alias, API root and auth", cli: []string{"provider", "add", "api.anthropic.com", "sk-ant-1", "--alias", "claude", "--api-root", "/v1", "--auth", "x-api-key"},
		method: "POST", path: "/addkey/api.anthropic.com", body: `{"key":"sk-ant-1","alias":"claude","api_root":"/v1","auth":"x-api-key"}`, out: "ok"},
	{name: "add key, well-known host defaults", cli: []string{"provider", "add", "api.groq.com", "gsk_1"}, method: "POST", path: "/addkey/api.groq.com/gsk_1", out: "ok"},
	{name: "add key, alias taken", cli: []string{"provider", "add", "api.groq.com", "gsk_1", "--alias", "local"}, method: "POST", path: "/addkey/api.groq.com/gsk_1?alias=local", kind: aiproxy.ECONFLICT},
	{name: "set missing provider", cli: []string{"provider", "set", "api.groq.com", "--inject-usage=false"}, method: "POST", path: "/provider/api.groq.com?inject_usage=false", kind: aiproxy.ENOTFOUND},
	{name: "stats", cli: []string{"stats", "--json", "--by", "user"}, method: "GET", path: "/stats?by=user", out: "json"},
	{name: "stats bad group", cli: []string{"stats", "--by", "color"}, method: "GET", path: "/stats?by=color", kind: aiproxy.EINVALID},
	{name: "stats bad since", cli: []string{"stats", "--since", "yesterday"}, method: "GET", path: "/stats?since=yesterday", kind: aiproxy.EINVALID},
	{name: "limit", cli: []string{"user", "limit", "alice", "--rpm", "60", "--tokens", "1000/total", "--models", "gpt-4o*,o1", "--json"}, method: "POST", path: "/limit/alice", body: `{"rpm":60,"tokens":"1000/total","models":["gpt-4o*","o1"]}`, out: "json"},
	{name: "limit spend", cli: []string{"user", "limit", "alice", "--spend", "5/total", "--json"}, method: "POST", path: "/limit/alice", body: `{"spend":"5/total"}`, out: "json"},
	{name: "limit defaults", cli: []string{"user", "limit", "*", "--concurrent", "2", "--models", "gpt-*", "--json"}, method: "POST", path: "/limit/*", body: `{"concurrent":2,"models":"gpt-*"}`, out: "json"},
	{name: "limit none", cli: []string{"user", "limit", "alice", "--rpm", "none", "--tpm", "none", "--json"}, method: "POST", path: "/limit/alice", body: `{"rpm":null,"tpm":"none"}`, out: "json"},
	{name: "limit clear", cli: []string{"user", "limit", "alice", "--clear", "--json"}, method: "POST", path: "/limit/alice", body: `{"clear":true}`, out: "json"},
	{name: "limit negative", cli: []string{"user", "limit", "alice", "--rpm=-5"}, method: "POST", path: "/limit/alice", body: `{"rpm":-5}`, kind: aiproxy.EINVALID},
	{name: "limit unknown period", cli: []string{"user", "limit", "alice", "--tokens", "5/fortnight"}, method: "POST", path: "/limit/alice", body: `{"tokens":"5/fortnight"}`, kind: aiproxy.EINVALID},
	{name: "limit unknown unit", cli: []string{"user", "limit", "alice", "--spend", "5EUR/month"}, method: "POST", path: "/limit/alice", body: `{"spend":"5EUR/month"}`, kind: aiproxy.EINVALID},
	{name: "limit missing user", cli: []string{"user", "limit", "bob", "--rpm", "1"}, method: "POST", path: "/limit/bob", body: `{"rpm":1}`, kind: aiproxy.ENOTFOUND},
	{name: "audit", cli: []string{"audit", "--json", "--since", "2001-01-01"}, method: "GET", path: "/audit?since=2001-01-01", out: "json"},
	{name: "audit bad since", cli: []string{"audit", "--since", "yesterday"}, method: "GET", path: "/audit?since=yesterday", kind: aiproxy.EINVALID},

	{name: "price set, a model with a slash", cli: []string{"price", "set", "openai/gpt-oss-120b", "--input", "0.15", "--output", "0.60", "--cached-input", "0.075"}, method: "POST", path: "/price/openai/gpt-oss-120b", body: `{"input":0.15,"output":0.60,"cached_input":0.075}`, out: "ok"},
	{name: "price set over a built-in price", cli: []string{"price", "set", "gpt-4o", "--input", "1", "--output", "2"}, method: "POST", path: "/price/gpt-4o", body: `{"input":1,"output":2}`, out: "ok"},
	{name: "price set again", cli: []string{"price", "set", "local/model", "--input", "0", "--output", "0"}, method: "POST", path: "/price/local/model", body: `{"input":0,"output":0,"cached_input":null}`, out: "ok"},
	{name: "price set negative", cli: []string{"price", "set", "m", "--input", "-1", "--output", "2"}, method: "POST", path: "/price/m", body: `{"input":-1,"output":2}`, kind: aiproxy.EINVALID},
	{name: "price set negative cached input", cli: []string{"price", "set", "m", "--input", "1", "--output", "2", "--cached-input", "-0.5"}, method: "POST", path: "/price/m", body: `{"input":1,"output":2,"cached_input":-0.5}`, kind: aiproxy.EINVALID},
	{name: "price set without output", cli: []string{"price", "set", "m", "--input", "1"}, method: "POST", path: "/price/m", body: `{"input":1}`, kind: aiproxy.EINVALID},
	{name: "price list", cli: []string{"price", "list", "--json"}, method: "GET", path: "/prices", out: "json"},
	{name: "price remove", cli: []string{"price", "remove", "local/model"}, method: "DELETE", path: "/price/local/model", out: "ok"},
	{name: "price remove built-in only", cli: []string{"price", "remove", "gpt-4o"}, method: "DELETE", path: "/price/gpt-4o", kind: aiproxy.ECONFLICT},
	{name: "price remove missing", cli: []string{"price", "remove", "no-such-model"}, method: "DELETE", path: "/price/no-such-model", kind: aiproxy.ENOTFOUND},
}

// kindOfStatus is the error code an admin HTTP status stands for.
var kindOfStatus = map[int]string{
	http.StatusBadRequest: aiproxy.EINVALID,
	http.StatusNotFound:   aiproxy.ENOTFOUND,
	http.StatusConflict:   aiproxy.ECONFLICT,
}

// parityHTTP runs row against srv and returns the status and body.
func parityHTTP(t *testing.T, srv *httptest.Server, row parityRow) (int, string) {
	t.Helper()
	url := srv.URL + "/" + parityToken + row.path
	var body io.Reader
	if row.body != "" {
		url = srv.URL + "/admin" + row.path
		body = strings.NewReader(row.body)
	}
	req, err := http.NewRequestWithContext(t.Context(), row.method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if row.body != "" {
		req.Header.Set("Authorization", "Bearer "+parityToken)
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func TestParity_adminOperations(t *testing.T) {
	t.Parallel()
	for _, row := range parityRows {
		t.Run(row.name, func(t *testing.T) {
			t.Parallel()
			cliDB, httpDB := newDBPath(t), newDBPath(t)
			paritySeed(t, cliDB)
			paritySeed(t, httpDB)

			r := run(t, row.stdin, append([]string{"--db", cliDB}, row.cli...)...)
			status, body := parityHTTP(t, newParityServer(t, httpDB), row)

			if row.kind == "" {
				if r.Code != 0 || r.Err != "" {
					t.Fatalf("CLI %v: exit %d, stderr %q; want success", row.cli, r.Code, r.Err)
				}
				if status != http.StatusOK {
					t.Fatalf("HTTP %s %s: status %d, body %s; want 200", row.method, row.path, status, body)
				}
				checkParityOutput(t, row, r.Out, body)
			} else {
				if r.Code != 1 || r.Out != "" {
					t.Errorf("CLI %v: exit %d, stdout %q; want exit 1 and no output", row.cli, r.Code, r.Out)
				}
				if got := kindOfStatus[status]; got != row.kind {
					t.Errorf("HTTP %s %s: status %d (%s), want %s; body %s", row.method, row.path, status, got, row.kind, body)
				}
				var e struct{ Error struct{ Message string } }
				if err := json.Unmarshal([]byte(body), &e); err != nil {
					t.Fatalf("HTTP error body %q: %v", body, err)
				}
				// One service error, one message, whichever transport shows it.
				if cliMsg := strings.TrimPrefix(strings.TrimSpace(r.Err), "aiproxy: "); cliMsg != e.Error.Message {
					t.Errorf("messages differ:\n CLI:  %q\n HTTP: %q", cliMsg, e.Error.Message)
				}
			}
			if diff := cmp.Diff(readParityState(t, cliDB), readParityState(t, httpDB)); diff != "" {
				t.Errorf("state differs (-CLI +HTTP):\n%s", diff)
			}
		})
	}
}

func checkParityOutput(t *testing.T, row parityRow, cliOut, httpBody string) {
	t.Helper()
	switch row.out {
	case "key":
		for _, out := range []string{cliOut, httpBody} {
			if k, ok := strings.CutSuffix(out, "\n"); !ok || !keys.Valid(k) {
				t.Errorf("output %q, want a key on one line", out)
			}
		}
	case "row":
		var row map[string]any
		if cliOut != "" || json.Unmarshal([]byte(httpBody), &row) != nil || row["host"] == nil || row["api_root"] == nil {
			t.Errorf("CLI printed %q, HTTP answered %q; want nothing and the provider's row", cliOut, httpBody)
		}
	case "ok":
		if cliOut != "" || httpBody != "OK\n" {
			t.Errorf("CLI printed %q, HTTP answered %q; want nothing and OK", cliOut, httpBody)
		}
	case "json":
		var c, h any
		if json.Unmarshal([]byte(cliOut), &c) != nil || json.Unmarshal([]byte(httpBody), &h) != nil {
			t.Errorf("CLI printed %q, HTTP answered %q; want JSON from both", cliOut, httpBody)
		}
	default:
		t.Fatalf("row %q: unknown output kind %q", row.name, row.out)
	}
}

// TestParity_listings: on one database, every listing's JSON is the same
// from the CLI and over HTTP, field order included.
func TestParity_listings(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	srv := newParityServer(t, db)
	tests := []struct {
		name string
		cli  []string
		path string
	}{
		{"users", []string{"user", "list", "--json"}, "/users"},
		{"providers", []string{"provider", "list", "--json"}, "/providers"},
		{"prices", []string{"price", "list", "--json"}, "/prices"},
		{"stats", []string{"stats", "--json"}, "/stats"},
		{"stats by user", []string{"stats", "--json", "--by", "user"}, "/stats?by=user"},
		{"stats by model", []string{"stats", "--json", "--by", "model"}, "/stats?by=model"},
		{"stats by provider", []string{"stats", "--json", "--by", "provider"}, "/stats?by=provider"},
		{"stats by day", []string{"stats", "--json", "--by", "day"}, "/stats?by=day"},
		{"stats of one user since a date", []string{"stats", "--json", "--user", "alice", "--since", "2025-01-03", "--by", "model"}, "/stats?user=alice&since=2025-01-03&by=model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cliOut := runOK(t, append([]string{"--db", db}, tc.cli...)...)
			status, body := parityHTTP(t, srv, parityRow{method: "GET", path: tc.path})
			if status != http.StatusOK {
				t.Fatalf("GET %s: status %d, body %s", tc.path, status, body)
			}
			var c, h bytes.Buffer
			if err := json.Compact(&c, []byte(cliOut)); err != nil {
				t.Fatalf("CLI output %q: %v", cliOut, err)
			}
			if err := json.Compact(&h, []byte(body)); err != nil {
				t.Fatalf("HTTP body %q: %v", body, err)
			}
			if c.Len() <= 2 {
				t.Fatalf("CLI output %s is empty: the seed should fill it", c.String())
			}
			if diff := cmp.Diff(c.String(), h.String()); diff != "" {
				t.Errorf("JSON differs (-CLI +HTTP):\n%s", diff)
			}
		})
	}
}

// exemptFromParity are commands with no HTTP twin, on purpose.
var exemptFromParity = map[string]string{
	"serve":         "it is the HTTP surface",
	"version":       "not an admin operation",
	"backup":        "a copy of the database holds the provider keys, which never leave the process",
	"rekey":         "needs the secret files on the database's host, with serve stopped",
	"migrate":       "reads a SQLite file on the host, with its serve stopped, and writes another database",
	"health":        "asks serve's /healthz over HTTP itself",
	"provider test": "sends each provider key to its provider from the database's host; an HTTP twin would make serve call out on demand",
}

// TestParity_everyCommandHasARow fails when a command is added to the CLI
// without a parity row, that is, without an HTTP twin.
func TestParity_everyCommandHasARow(t *testing.T) {
	t.Parallel()
	root := newRoot(&appContext{v: viper.New(), streams: Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}})
	covered := map[string]bool{}
	for _, row := range parityRows {
		n := 1
		if row.cli[0] == "user" || row.cli[0] == "provider" || row.cli[0] == "price" {
			n = 2
		}
		covered[strings.Join(row.cli[:n], " ")] = true
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			for _, sub := range c.Commands() {
				walk(sub)
			}
			return
		}
		if !c.Runnable() || c.Name() == "help" {
			return
		}
		name := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if _, ok := exemptFromParity[name]; ok || covered[name] {
			return
		}
		t.Errorf("command %q has no parity row: give it an HTTP admin route and a row in parityRows", name)
	}
	walk(root)
}
