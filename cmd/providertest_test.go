package cmd

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/keys"
)

// fakeModels is a provider whose /v1/models accepts only good, and answers
// other keys 401 with OpenAI's error body, echoing the key as OpenAI does.
func fakeModels(t *testing.T, good string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if key != good {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"message":"Incorrect API key provided: ` + key + `","type":"invalid_request_error"}}`))
			return
		}
		w.Write([]byte(`{"object":"list","data":[{"id":"gpt-4o"}]}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestProviderTest_OkRejectedUnreachable: each stored key is tried against
// its provider's model list; a rejected key shows the provider's status and
// message (without the key), an unreachable provider the reason, and any
// failure exits 1.
func TestProviderTest_OkRejectedUnreachable(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	const good, bad, lost = "sk-good-0123456789abcdef", "sk-bad-0123456789abcdefgh", "sk-lost-0123456789abcdef"
	up := fakeModels(t, good)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	runOK(t, "--db", db, "provider", "add", "good.test", good, "--base-url", up.URL)
	runOK(t, "--db", db, "provider", "add", "good.test", bad)
	runOK(t, "--db", db, "provider", "add", "dead.test", lost, "--base-url", deadURL)

	r := run(t, "", "--db", db, "provider", "test", "--json")
	if r.Code != 1 || !strings.Contains(r.Err, "2 of 3 provider keys failed") {
		t.Errorf("provider test: exit %d, stderr %q; want 1 and a count of the failures", r.Code, r.Err)
	}
	for _, k := range []string{good, bad, lost} {
		if strings.Contains(r.Out+r.Err, k) {
			t.Errorf("provider test output holds a key: %s", r.Out)
		}
	}
	var got []keyCheck
	if err := json.Unmarshal([]byte(r.Out), &got); err != nil {
		t.Fatalf("provider test --json: %v in %q", err, r.Out)
	}
	byHint := map[string]keyCheck{}
	for _, c := range got {
		byHint[c.KeyHint] = c
	}
	if c := byHint[keys.Hint(good)]; c.Result != "ok" || c.Host != "good.test" || c.Status == nil || *c.Status != 200 {
		t.Errorf("good key: %+v, want ok 200", c)
	}
	if c := byHint[keys.Hint(bad)]; c.Result != "rejected" || c.Status == nil || *c.Status != 401 || !strings.HasPrefix(c.Message, "Incorrect API key provided") {
		t.Errorf("bad key: %+v, want rejected 401 with the provider's message", c)
	}
	if c := byHint[keys.Hint(lost)]; c.Result != "unreachable" || c.Status != nil || !strings.Contains(c.Message, "refused") {
		t.Errorf("key of a dead provider: %+v, want unreachable, connection refused", c)
	}

	// One host whose keys all work: exit 0, plain text.
	runOK(t, "--db", db, "provider", "remove", "good.test", bad)
	out := runOK(t, "--db", db, "provider", "test", "good.test")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "ok") {
		t.Errorf("provider test good.test:\n%s\nwant a header and one ok row", out)
	}
	checkFailed(t, run(t, "", "--db", db, "provider", "test", "nowhere.test"), "not found")
}
