package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
)

// relShape is what KEY-3 compares between refusals: status, body and the
// set of header names (Date aside, whose value changes by the second).
type relShape struct {
	Status  int
	Body    string
	Headers []string
}

func relShapeOf(status int, hdr http.Header, body string) relShape {
	var names []string
	for k := range hdr {
		if k != "Date" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return relShape{status, body, names}
}

// TestKEY3_RefusalsAreIndistinguishable: every refused Authorization value
// (wrong, deleted, reset, malformed, hostile) gets the same status, body and
// header set, on the proxy and on /me; nothing is written.
func TestKEY3_RefusalsAreIndistinguishable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	deleted := h.createUser("bob")
	if err := h.svc.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	old := h.createUser("carol")
	if _, err := h.svc.ResetUser(ctx, "carol", admin.Expiry{}); err != nil {
		t.Fatal(err)
	}
	unknown := "sk-cfw" + strings.Repeat("A", 45)
	cases := []struct {
		name   string
		values []string // Authorization headers; nil sends none
	}{
		{"unknown key", []string{"Bearer " + unknown}},
		{"deleted user", []string{"Bearer " + deleted}},
		{"reset key", []string{"Bearer " + old}},
		{"valid key one character short", []string{"Bearer " + h.key[:len(h.key)-1]}},
		{"valid key one character more", []string{"Bearer " + h.key + "x"}},
		{"valid key with another last character", []string{"Bearer " + h.key[:len(h.key)-1] + string(rune('A'+(h.key[len(h.key)-1]+1)%26))}},
		{"prefix only", []string{"Bearer sk-cfw"}},
		{"10k characters", []string{"Bearer sk-cfw" + strings.Repeat("a", 10000)}},
		{"sql", []string{"Bearer ' OR 1=1--"}},
		{"sql in key shape", []string{"Bearer sk-cfw' OR '1'='1' UNION SELECT key_hash FROM users--"}},
		{"non-UTF-8", []string{"Bearer sk-cfw\xff\xfe\xfd" + strings.Repeat("a", 42)}},
		{"provider key", []string{"Bearer sk-upstream-openai-1"}},
		{"empty bearer", []string{"Bearer "}},
		{"bearer only", []string{"Bearer"}},
		{"missing Bearer", []string{h.key}},
		{"Basic", []string{"Basic " + h.key}},
		{"Token", []string{"Token " + h.key}},
		{"empty", []string{""}},
		{"no header", nil},
		{"two headers, valid first", []string{"Bearer " + h.key, "Bearer " + unknown}},
		{"two headers, both valid", []string{"Bearer " + h.key, "Bearer " + h.key}},
	}
	usersBefore := snapUsers(t, h)
	for _, target := range []struct{ method, path, body string }{
		{"POST", "/v1/chat/completions", chatBody},
		{"GET", "/me", ""},
		{"POST", "/me/reset", ""},
	} {
		t.Run(target.path, func(t *testing.T) {
			shapes := map[string]relShape{}
			for _, tc := range cases {
				hdr := http.Header{"Content-Type": {"application/json"}}
				if tc.values != nil {
					hdr["Authorization"] = tc.values
				}
				a := relSend(t, nil, target.method, h.proxy.URL+target.path, target.body, hdr)
				shapes[tc.name] = relShapeOf(a.status, a.header, a.body)
			}
			// Bytes no client library sends: NUL, a bare CR, obs-fold. Go's
			// server refuses them before aiproxy runs; what matters is that
			// a valid key inside them is refused exactly like an invalid one.
			for _, tc := range []struct{ name, pre, post string }{
				{"NUL", "Bearer ", "\x00"},
				{"NUL before", "Bearer \x00", ""},
				{"CR", "Bearer ", "\rX: y"},
				{"obs-fold", "Bearer ", "\r\n x"},
				{"non-UTF-8 raw", "Bearer ", "\xff"},
			} {
				var got []relShape
				for _, k := range []string{h.key, unknown} {
					ans := relRaw(t, relAddr(h), relRequest(target.method, target.path,
						[]string{"Authorization: " + tc.pre + k + tc.post}, target.body), 10*time.Second)
					if len(ans) != 1 {
						t.Fatalf("%s: %d answers, want 1", tc.name, len(ans))
					}
					got = append(got, relShapeOf(ans[0].status, ans[0].header, ans[0].body))
				}
				if diff := cmp.Diff(got[1], got[0]); diff != "" {
					t.Errorf("%s: the valid key's answer differs from an unknown key's (-unknown +valid):\n%s", tc.name, diff)
				}
				if got[0].Status != 401 && got[0].Status != 400 {
					t.Errorf("%s: status %d, want 401 or 400", tc.name, got[0].Status)
				}
			}
			ref := shapes["unknown key"]
			if ref.Status != 401 {
				t.Fatalf("unknown key: status %d, want 401", ref.Status)
			}
			if code, ok := relOpenAIError(ref.Body); !ok || code != "invalid_api_key" {
				t.Errorf("unknown key: body %q, want an invalid_api_key error", ref.Body)
			}
			for _, tc := range cases {
				if diff := cmp.Diff(ref, shapes[tc.name]); diff != "" {
					t.Errorf("%s: the refusal differs from an unknown key's (-unknown +got):\n%s", tc.name, diff)
				}
			}
		})
	}
	if diff := cmp.Diff(usersBefore, snapUsers(t, h)); diff != "" {
		t.Errorf("users changed (-before +after):\n%s", diff)
	}
	h.flushUsage()
	if rows := h.stats(""); len(rows) != 1 || rows[0].Requests != 0 {
		t.Errorf("usage rows = %+v, want none: refusals are not recorded", rows)
	}
}

func snapUsers(t *testing.T, h *harness) []string {
	t.Helper()
	users, err := h.svc.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, u := range users {
		out = append(out, fmt.Sprintf("%s %s %v", u.Name, u.KeyHint, u.ExpiresAt))
	}
	return out
}

// relKey4Token is the admin token of the KEY-4 run.
const relKey4Token = "Adm1n-T0ken_Key4~Xq9Lm2Np7Rs5Tv8W"

// relEchoKeyUpstream answers every request with status and a body (and a
// header) that echo the Authorization it received, as some providers' 401
// bodies do.
func relEchoKeyUpstream(status int, inHeader bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		auth := r.Header.Get("Authorization")
		key := strings.TrimPrefix(auth, "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		if inHeader {
			w.Header().Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token", key="`+key+`"`)
		}
		w.WriteHeader(status)
		msg, _ := json.Marshal("Incorrect API key provided: " + key + `. You passed "` + auth + `".`)
		fmt.Fprintf(w, `{"error":{"message":%s,"type":"invalid_request_error","code":"invalid_api_key"}}`, msg)
	})
}

// relSecretForms are the ways a secret could show up: as is, and URL-encoded
// for a query or a path.
func relSecretForms(s string) []string {
	forms := []string{s, url.QueryEscape(s), url.PathEscape(s)}
	slices.Sort(forms)
	return slices.Compact(forms)
}

// TestKEY4_NoKeyInLogsOrAnswers runs the success and failure paths with debug
// logging, then greps every log byte and every answer for every user key,
// provider key and the admin token, raw and URL-encoded. The only allowed hit
// is a new key in the answer that creates it.
func TestKEY4_NoKeyInLogsOrAnswers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{
		proxy:  proxy.Config{HeaderTimeout: 500 * time.Millisecond},
		server: server.Config{AccessToken: relKey4Token},
	})
	ctx := context.Background()
	providerKeys := []string{"sk-upstream-openai-1"}
	addProv := func(host, key string, handler http.Handler) {
		providerKeys = append(providerKeys, key)
		relUpstream(t, h, host, key, handler)
	}
	addProv("echo401.test", "sk-prov401+Secret/Key4=Zz9", relEchoKeyUpstream(401, false))
	addProv("echo500.test", "sk-prov500-Secret-Key4-Yy8", relEchoKeyUpstream(500, false))
	addProv("echo429.test", "sk-prov429-Secret-Key4-Ww6", relEchoKeyUpstream(429, false))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	providerKeys = append(providerKeys, "sk-refused-Secret-Key4-Vv5")
	h.addProvider("refused.test", "sk-refused-Secret-Key4-Vv5", refused)
	pathKey := "sk-addkey-path-Secret-Key4-Uu4"
	bodyKey := "sk-addkey-body+Secret/Key4=Tt3"
	providerKeys = append(providerKeys, pathKey, bodyKey, "sk-never-stored-Secret-Key4-Ss2")

	bob := h.createUser("bob")
	userKeys := []string{h.key, bob}
	var answers []string // every answer that must hold no secret
	keep := func(label string, status int, hdr http.Header, body string) {
		answers = append(answers, fmt.Sprintf("%s %d %v %s", label, status, hdr, body))
	}
	send := func(label, method, path, body string, hdr http.Header) relReply {
		t.Helper()
		a := relSend(t, nil, method, h.proxy.URL+path, body, hdr)
		keep(label, a.status, a.header, a.body)
		return a
	}
	// created answers a request whose answer is a new key: it may hold that
	// key, and nothing else secret.
	created := func(label, method, path string, hdr http.Header) string {
		t.Helper()
		a := relSend(t, nil, method, h.proxy.URL+path, "", hdr)
		k := strings.TrimSpace(a.body)
		if a.status != 200 || !strings.HasPrefix(k, "sk-cfw") {
			t.Fatalf("%s: %d %q, want a new key", label, a.status, a.body)
		}
		userKeys = append(userKeys, k)
		keep(label, a.status, a.header, strings.ReplaceAll(a.body, k, "<the new key>"))
		return k
	}
	tok := "/" + relKey4Token
	adminAuth := relHdr("Authorization", "Bearer "+relKey4Token)

	// Proxy: success, streams, upstream errors echoing the provider key,
	// connection refused, header timeout, a cut stream, wrong keys.
	send("ok", "POST", "/v1/chat/completions", chatBody, relAuth(h.key))
	send("stream", "POST", "/v1/chat/completions", streamBody, relAuth(h.key, "X-Fake-Mode", "sse:3:0"))
	// fakeai's echo mode prints the headers the provider received, the
	// provider key among them, in a 200 body; it is checked below for the
	// user key only.
	relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions?trace=1", chatBody, relAuth(bob, "X-Fake-Mode", "echo"))
	for _, host := range []string{"echo401.test", "echo500.test", "echo429.test"} {
		send(host, "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", host))
		send(host+" stream", "POST", "/"+host+"/v1/chat/completions", streamBody, relAuth(h.key))
		send(host+" GET", "GET", "/"+host+"/v1/models", "", relAuth(h.key))
	}
	send("refused", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "refused.test"))
	send("timeout", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Fake-Mode", "hang"))
	func() {
		res := h.do("POST", "/v1/chat/completions", streamBody, map[string]string{"Authorization": "Bearer " + h.key, "X-Fake-Mode": "cut:2"})
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		keep("cut", res.StatusCode, res.Header, string(b))
	}()
	send("wrong key", "POST", "/v1/chat/completions", chatBody, relAuth("sk-cfw"+strings.Repeat("Q", 45)))
	send("provider key as user key", "POST", "/v1/chat/completions", chatBody, relAuth("sk-upstream-openai-1"))
	send("/me", "GET", "/me", "", relAuth(h.key))

	// Admin, both forms, the provider key in the path and in a body.
	created("register", "POST", tok+"/register/dave", nil)
	created("reset", "POST", tok+"/reset/dave", nil)
	created("admin register", "POST", "/admin/register/erin", adminAuth)
	send("addkey path", "POST", tok+"/addkey/path.test/"+pathKey+"?base_url="+url.QueryEscape(h.upstream.URL), "", nil)
	send("addkey path again", "POST", tok+"/addkey/path.test/"+pathKey, "", nil)
	send("addkey body", "POST", "/admin/addkey/body.test", `{"key":"`+bodyKey+`","base_url":"`+h.upstream.URL+`"}`, adminAuth)
	send("addkey bad host", "POST", tok+"/addkey/bad%20host/sk-never-stored-Secret-Key4-Ss2", "", nil)
	send("addkey wrong token", "POST", "/wrong-token/addkey/x.test/sk-never-stored-Secret-Key4-Ss2", "", nil)
	send("users", "GET", tok+"/users", "", nil)
	send("providers", "GET", "/admin/providers", "", adminAuth)
	send("stats", "GET", tok+"/stats?by=user", "", nil)
	send("wrong method", "GET", tok+"/register/frank", "", nil)
	send("dot segments", "POST", "/me/.."+tok+"/register/gina", "", nil)
	send("double slash", "POST", tok+"//users", "", nil)
	send("delete", "DELETE", tok+"/delete/dave", "", nil)
	send("path key in use", "POST", "/path.test/v1/chat/completions", chatBody, relAuth(h.key))
	send("body key in use", "POST", "/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "body.test"))

	// Self-service reset: the answer holds the new key only.
	nk := created("me reset", "POST", "/me/reset", relAuth(bob))
	send("old key after reset", "GET", "/me", "", relAuth(bob))
	send("new key /me", "GET", "/me", "", relAuth(nk))

	relWaitMsg(t, h, "proxy", 1, 5*time.Second)
	h.flushUsage()
	logs := h.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) && !strings.Contains(logs, `"msg":"proxy"`) {
		t.Fatalf("no logs captured")
	}
	secrets := append(append(append([]string{relKey4Token}, providerKeys...), userKeys...), "sk-cfw")
	for _, s := range secrets {
		for _, form := range relSecretForms(s) {
			if s == "sk-cfw" {
				// The prefix alone may appear in messages ("send Bearer
				// sk-cfw…"), but never followed by key characters.
				if i := strings.Index(logs, "sk-cfw"); i >= 0 && i+7 < len(logs) && isKeyChar(logs[i+6]) {
					t.Errorf("the log holds a user key: …%s…", logs[i:min(len(logs), i+20)])
				}
				continue
			}
			if strings.Contains(logs, form) {
				t.Errorf("the log holds secret %q (as %q)", s, form)
			}
			for _, a := range answers {
				if strings.Contains(a, form) {
					t.Errorf("an answer holds secret %q (as %q): %s", s, form, a)
				}
			}
		}
	}
	// The upstream saw no user key (KEY-5) in any of the above.
	for _, r := range h.fake.Requests() {
		all := fmt.Sprint(r.Header) + string(r.Body) + r.Path + r.Query
		for _, k := range userKeys {
			if strings.Contains(all, k) {
				t.Errorf("the upstream received a user key")
			}
		}
	}
	_ = ctx
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// TestKEY4_ClientKeyInQueryNotLogged: a client that puts its key in the query
// string (some SDKs do, for "?key=") must not get it into the log when the
// upstream cannot be reached: Go's dial error quotes the whole URL.
func TestKEY4_ClientKeyInQueryNotLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{proxy: proxy.Config{HeaderTimeout: 300 * time.Millisecond}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	h.addProvider("refused.test", "sk-refused-secret-key", refused)
	for _, tc := range []struct{ name, host, mode string }{
		{"connection refused", "refused.test", ""},
		{"header timeout", "api.openai.com", "hang"},
		{"cut stream", "api.openai.com", "cut:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions?key="+h.key+"&api-key="+url.QueryEscape(h.key), strings.NewReader(streamBody))
			req.Header.Set("Authorization", "Bearer "+h.key)
			req.Header.Set("X-Host-Final", tc.host)
			if tc.mode != "" {
				req.Header.Set("X-Fake-Mode", tc.mode)
			}
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
	relWaitMsg(t, h, "proxy", 3, 5*time.Second)
	if logs := h.logs.String(); strings.Contains(logs, h.key) {
		t.Errorf("the log holds the user key from the query string:\n%s", logs)
	}
}

// relPanicTransport panics the way a buggy dependency would: with a value
// that prints the request it was given.
type relPanicTransport struct{}

func (relPanicTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	panic(fmt.Sprintf("transport bug while sending %s %s with header %v", r.Method, r.URL, r.Header))
}

// TestKEY4_PanicRecoveryHidesKeys: a panic while proxying is answered 500
// internal_error, and its log line holds neither the user key nor the
// provider key, even when the panic value prints the request.
func TestKEY4_PanicRecoveryHidesKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{proxy: proxy.Config{Transport: relPanicTransport{}}})
	a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key))
	relWantError(t, "panic", a.status, a.header, a.body, 500, "internal_error")
	relWaitMsg(t, h, "panic", 1, 5*time.Second)
	logs := h.logs.String()
	for _, s := range []string{h.key, "sk-upstream-openai-1"} {
		if strings.Contains(logs, s) || strings.Contains(a.body, s) {
			t.Errorf("secret %q reached the log or the answer after a panic:\n%s", s, logs)
		}
	}
	// The server keeps serving.
	h2 := relSend(t, nil, "GET", h.proxy.URL+"/healthz", "", nil)
	if h2.status != 200 {
		t.Errorf("healthz after a panic: %d", h2.status)
	}
}

// TestKEY5_KeysStayOnTheirSide: the upstream sees the provider key and no
// user key in any header; a provider key echoed in an upstream error (body
// or header) never reaches the client.
func TestKEY5_KeysStayOnTheirSide(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody,
		relAuth(h.key, "X-Fake-Mode", "echo", "X-Api-Key", "harmless", "OpenAI-Organization", "org-x"))
	if a.status != 200 {
		t.Fatalf("echo: %d %s", a.status, a.body)
	}
	reqs := h.fake.Requests()
	got := reqs[len(reqs)-1]
	if auth := got.Header.Get("Authorization"); auth != "Bearer sk-upstream-openai-1" {
		t.Errorf("upstream Authorization = %q, want the provider key", auth)
	}
	for k, vv := range got.Header {
		for _, v := range vv {
			if strings.Contains(v, "sk-cfw") {
				t.Errorf("upstream header %s holds a user key: %q", k, v)
			}
		}
	}

	const provKey = "sk-proj-EchoedKey5Secret0123456789abcdef"
	for _, status := range []int{400, 401, 403, 404, 429, 500} {
		for i, path := range []string{"/v1/chat/completions", "/v1/models"} {
			// A host per request: a key answered 401, 403 or 429 rests
			// (CONTRACT section 5), and the next request would not reach it.
			host := fmt.Sprintf("echo%d-%d.test", status, i)
			relUpstream(t, h, host, provKey, relEchoKeyUpstream(status, true))
			a := relSend(t, nil, "POST", h.proxy.URL+path, chatBody, relAuth(h.key, "X-Host-Final", host))
			if a.status != status {
				t.Errorf("%s %s: status %d, want the upstream's %d", host, path, a.status, status)
			}
			if strings.Contains(a.body, provKey) {
				t.Errorf("%s %s: the body holds the provider key: %s", host, path, a.body)
			}
			for k, vv := range a.header {
				for _, v := range vv {
					if strings.Contains(v, provKey) {
						t.Errorf("%s %s: header %s holds the provider key: %q", host, path, k, v)
					}
				}
			}
			if !json.Valid([]byte(a.body)) {
				t.Errorf("%s %s: the masked body is not JSON any more: %s", host, path, a.body)
			}
		}
	}
}

// TestKEY9_RevocationByAnotherHandle: changes made through a second store
// handle on the same file (the CLI) are seen at the very next request: a new
// key works, a reset kills the old key, a delete kills the key. 50 rounds.
func TestKEY9_RevocationByAnotherHandle(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	other, err := storeOpen(h.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cli := admin.New(other)
	ctx := context.Background()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	status := func(key string) int {
		t.Helper()
		a := relSend(t, client, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(key))
		return a.status
	}
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	for i := range rounds {
		name := fmt.Sprintf("bob%d", i)
		k1, err := cli.CreateUser(ctx, name, admin.Expiry{})
		if err != nil {
			t.Fatal(err)
		}
		if s := status(k1); s != 200 {
			t.Fatalf("round %d: new key: %d, want 200", i, s)
		}
		k2, err := cli.ResetUser(ctx, name, admin.Expiry{})
		if err != nil {
			t.Fatal(err)
		}
		if s := status(k1); s != 401 {
			t.Fatalf("round %d: old key after reset: %d, want 401", i, s)
		}
		if s := status(k2); s != 200 {
			t.Fatalf("round %d: new key after reset: %d, want 200", i, s)
		}
		if err := cli.DeleteUser(ctx, name); err != nil {
			t.Fatal(err)
		}
		if s := status(k2); s != 401 {
			t.Fatalf("round %d: key after delete: %d, want 401", i, s)
		}
		// An expiry set from the other handle applies at once too.
		k3, err := cli.CreateUser(ctx, name, admin.Expiry{})
		if err != nil {
			t.Fatal(err)
		}
		if s := status(k3); s != 200 {
			t.Fatalf("round %d: recreated: %d", i, s)
		}
		past := time.Now().Add(-time.Minute)
		if err := other.SetUserExpiry(ctx, name, &past); err != nil {
			t.Fatal(err)
		}
		if s := status(k3); s != 401 {
			t.Fatalf("round %d: expired from the other handle: %d, want 401", i, s)
		}
	}
}
