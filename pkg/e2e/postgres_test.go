//go:build unix

package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// pgSecret is the AIPROXY_SECRET_KEY of the PostgreSQL tests: a PostgreSQL
// database needs one (no key file is made beside a DSN).
const pgSecret = "ZTJlIHBvc3RncmVzIHNlY3JldCwgMzIgYnl0ZXMhISE="

// newPostgresEnv is newEnv on a PostgreSQL DSN, every process given the secret.
func newPostgresEnv(t *testing.T, dsn string) *env {
	t.Helper()
	e := &env{t: t, bin: binary(t), dir: t.TempDir(), db: dsn, fake: fakeai.New(),
		extraEnv: []string{"AIPROXY_SECRET_KEY=" + pgSecret}}
	e.up = httptest.NewServer(e.fake)
	t.Cleanup(func() {
		e.up.CloseClientConnections()
		e.up.Close()
	})
	e.mustCLI("provider", "add", fakeHost, "sk-upstream-secret", "--base-url", e.up.URL)
	return e
}

// TestPostgres_TwoInstances: two serve processes on one PostgreSQL
// database (CONTRACT section 8). A key reset through instance A's admin
// surface is refused by instance B at its next request, and the new key
// works on both; a user deleted through the CLI is refused by both; stats
// through either instance count both instances' requests; neither
// instance's first line shows the DSN's password.
func TestPostgres_TwoInstances(t *testing.T) {
	t.Parallel()
	dsn := strings.Replace(pgtest.NewDatabase(t), "postgres@", "postgres:hunter2pw@", 1)
	e := newPostgresEnv(t, dsn)
	a := e.serve("--access-token", adminToken)
	b := e.serve("--access-token", adminToken)
	for name, s := range map[string]*serveProc{"A": a, "B": b} {
		if logs := s.logs.String(); strings.Contains(logs, "hunter2pw") {
			t.Errorf("instance %s logged the DSN's password:\n%s", name, logs)
		}
	}

	key := e.createUser("alice")
	bob := e.createUser("bob")
	for i := 0; i < 3; i++ {
		mustProxy(t, a.addr, key)
		mustProxy(t, b.addr, key) // B now answers alice from its cache
	}
	mustProxy(t, b.addr, bob)

	r, err := send(t.Context(), "POST", "http://"+a.addr+"/admin/reset/alice", "",
		map[string]string{"Authorization": "Bearer " + adminToken})
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("reset alice through A = %d %q, %v", r.status, r.body, err)
	}
	newKey := strings.TrimSpace(r.body)
	// B learns of the reset from PostgreSQL's notification (pkg/store
	// pg_listen.go), a round trip after A's commit: refused within the
	// second that CONTRACT section 8 allows.
	var got reply
	late := map[string]float64{} // requests served before the change arrived: usage too
	if !poll(time.Second, func() bool {
		got, err = proxied(t.Context(), b.addr, key, "ok")
		if err == nil && got.status == http.StatusOK {
			late["alice"]++
		}
		return err == nil && got.status == http.StatusUnauthorized
	}) {
		t.Errorf("old key on B 1 s after the reset on A = %d, %v; want 401", got.status, err)
	}
	mustProxy(t, b.addr, newKey)
	mustProxy(t, a.addr, newKey)

	e.mustCLI("user", "delete", "bob")
	for name, s := range map[string]*serveProc{"A": a, "B": b} {
		if !poll(time.Second, func() bool {
			got, err = proxied(t.Context(), s.addr, bob, "ok")
			if err == nil && got.status == http.StatusOK {
				late["bob"]++
			}
			return err == nil && got.status == http.StatusUnauthorized
		}) {
			t.Errorf("deleted bob's key on %s 1 s after the CLI delete = %d, %v; want 401", name, got.status, err)
		}
	}

	// alice: 3 + 3 + 2 successful requests, 1 refused (not usage); bob: 1;
	// each plus those served before the change reached its instance.
	// Usage is written in the background: poll.
	var rows []map[string]any
	ok := poll(10*time.Second, func() bool {
		r, err := send(t.Context(), "GET", "http://"+b.addr+"/admin/stats?by=user", "",
			map[string]string{"Authorization": "Bearer " + adminToken})
		if err != nil || r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &rows) != nil {
			return false
		}
		got := map[string]float64{}
		for _, row := range rows {
			if user, ok := row["user"].(string); ok {
				got[user], _ = row["requests"].(float64)
			}
		}
		return got["alice"] == 8+late["alice"] && got["bob"] == 1+late["bob"]
	})
	if !ok {
		t.Errorf("stats by user through B = %+v, want alice %v and bob %v (both instances' requests)", rows, 8+late["alice"], 1+late["bob"])
	}
	n := fmt.Sprint(8 + late["alice"])
	if out := e.mustCLI("stats", "--by", "user", "--json"); !strings.Contains(out, `"requests": `+n) && !strings.Contains(out, `"requests":`+n) {
		t.Errorf("aiproxy stats --by user = %s, want alice's %s requests", out, n)
	}
}

// TestPostgres_TwoInstancesShareOneBudget: 100 requests at once, half to
// each of two serve processes on one database, against a token budget that
// covers 10 of them: exactly 10 reach the upstream (held there until all
// the others were answered), the other 90 get 429 insufficient_quota from
// whichever instance they reached (CONTRACT sections 5 and 8).
func TestPostgres_TwoInstancesShareOneBudget(t *testing.T) {
	t.Parallel()
	e := newPostgresEnv(t, pgtest.NewDatabase(t))
	a := e.serve()
	b := e.serve()
	key := e.createUser("alice")
	body := `{"model":"gpt-fake","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	need := len(body)/4 + 1000 // the prompt is estimated at four bytes a token
	e.mustCLI("user", "limit", "alice", "--tokens", strconv.Itoa(10*need+need-1)+"/day")

	statuses := make(chan reply, 100)
	for i := range 100 {
		addr := a.addr
		if i%2 == 1 {
			addr = b.addr
		}
		go func() {
			r, err := sendWith(t.Context(), client, "POST", "http://"+addr+"/v1/chat/completions", body,
				map[string]string{"Authorization": "Bearer " + key, "X-Host-Final": fakeHost, "X-Fake-Mode": "gated:2",
					"Content-Type": "application/json"})
			if err != nil {
				r.status, r.body = -1, err.Error()
			}
			statuses <- r
		}()
	}
	got := map[int]int{}
	for range 90 {
		var r reply
		select {
		case r = <-statuses:
		case <-time.After(60 * time.Second):
			close(e.fake.Gate)
			t.Fatalf("after 60 s, answers %v and %d upstream; want 90 × 429 while 10 are held upstream", got, e.fake.Count())
		}
		got[r.status]++
		if r.status == http.StatusTooManyRequests && !strings.Contains(r.body, "insufficient_quota") {
			t.Errorf("429 body = %s, want insufficient_quota", r.body)
		}
	}
	if got[http.StatusTooManyRequests] != 90 || e.fake.Count() != 10 {
		t.Errorf("with 10 requests held upstream: answers %v and %d upstream; want 90 × 429 and 10 upstream", got, e.fake.Count())
	}
	close(e.fake.Gate) // the ten finish
	for range 10 {
		r := <-statuses
		got[r.status]++
	}
	if got[http.StatusOK] != 10 {
		t.Errorf("answers = %v, want 10 × 200 and 90 × 429", got)
	}
}
