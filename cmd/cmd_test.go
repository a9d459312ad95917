package cmd

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/storetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/cmd")

// result is what one in-process run of aiproxy produced.
type result struct {
	Out, Err string
	Code     int
}

// run executes aiproxy with args, stdin as its standard input.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Execute(t.Context(), args, Streams{In: strings.NewReader(stdin), Out: &out, Err: &errOut})
	return result{Out: out.String(), Err: errOut.String(), Code: code}
}

// runOK runs aiproxy and fails the test unless it succeeds silently on
// stderr; it returns stdout.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, "", args...)
	if r.Code != 0 || r.Err != "" {
		t.Fatalf("aiproxy %s: exit %d, stderr %q", strings.Join(args, " "), r.Code, r.Err)
	}
	return r.Out
}

// checkFailed reports unless r is a failure as the contract describes it:
// exit code 1, nothing on stdout, exactly one "aiproxy: " line on stderr
// containing want.
func checkFailed(t *testing.T, r result, want string) {
	t.Helper()
	if r.Code != 1 {
		t.Errorf("exit code = %d, want 1", r.Code)
	}
	if r.Out != "" {
		t.Errorf("stdout = %q, want empty", r.Out)
	}
	if !strings.HasPrefix(r.Err, "aiproxy: ") || !strings.HasSuffix(r.Err, "\n") || strings.Count(r.Err, "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting with \"aiproxy: \"", r.Err)
	}
	if !strings.Contains(r.Err, want) {
		t.Errorf("stderr = %q, want it to contain %q", r.Err, want)
	}
}

// newDBPath returns the path of a new, empty database (schema and secret
// key file made) in a fresh temporary folder.
func newDBPath(t *testing.T) string {
	t.Helper()
	return storetest.NewFile(t)
}

// openService opens the database at path directly, as a second process
// (say, serve) would, for setting up and checking state.
func openService(t *testing.T, path string) *admin.Service {
	t.Helper()
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("store.Open(%q): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return admin.New(db)
}

// dbState is everything a command could change in a database.
type dbState struct {
	Users     []aiproxy.User
	Providers []aiproxy.Provider
	Totals    []aiproxy.StatsRow
}

func snapshot(t *testing.T, path string) dbState {
	t.Helper()
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("store.Open(%q): %v", path, err)
	}
	defer db.Close()
	svc := admin.New(db)
	var s dbState
	if s.Users, err = svc.ListUsers(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Providers, err = svc.ListProviders(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Totals, err = svc.Stats(t.Context(), admin.StatsQuery{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkGolden compares got with testdata/cmd/NAME.golden, or rewrites that
// file under -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("..", "testdata", "cmd", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// goldenClock is the fixed time at which seedGolden makes everything.
var goldenClock = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// seedGolden fills the database at path with a fixed clock and fixed keys,
// so that listings are the same on every run. Bob's key expired in 2025;
// carol's expires in 2100, so the "expired" mark is stable too.
func seedGolden(t *testing.T, path string) {
	t.Helper()
	svc := openService(t, path)
	ctx := t.Context()
	svc.Now = func() time.Time { return goldenClock }
	n := 0
	svc.NewKey = func() string { n++; return fmt.Sprintf("sk-cfw%045d", n) }
	exp := func(d string) admin.Expiry {
		e, err := svc.ExpiryFrom(d)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, u := range []struct {
		name string
		exp  admin.Expiry
	}{
		{"alice", admin.Expiry{}},
		{"bob", exp("2025-06-01")},
		{"carol@example.com", exp("2099-12-31")},
		{"dave", exp("30d")},
	} {
		if _, err := svc.CreateUser(ctx, u.name, u.exp); err != nil {
			t.Fatal(err)
		}
	}
	users, err := svc.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := map[string]int64{}
	for _, u := range users {
		id[u.Name] = u.ID
	}
	no := false
	for _, p := range []admin.ProviderKey{
		{Host: "api.openai.com", Key: "sk-proj-aaaaaaaaaaaaaaaa1111"},
		{Host: "api.openai.com", Key: "sk-proj-bbbbbbbbbbbbbbbb2222"},
		{Host: "api.groq.com", Key: "gsk_cccccccccccccccc3333", BaseURL: "https://api.groq.com/openai", InjectUsage: &no},
		{Host: "localhost:11434", Key: "ollama", BaseURL: "http://127.0.0.1:11434"},
	} {
		if err := svc.AddProviderKey(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.RecordUsage(ctx, goldenUsage(id)); err != nil {
		t.Fatal(err)
	}
}

func i64(v int64) *int64 { return &v }

// goldenUsage is a few days of requests by alice and bob.
func goldenUsage(id map[string]int64) []aiproxy.Usage {
	at := func(day, hour int) time.Time { return time.Date(2025, 1, day, hour, 0, 0, 0, time.UTC) }
	u := func(t time.Time, user, provider, model string, status int, p, c int64) aiproxy.Usage {
		rec := aiproxy.Usage{Time: t, UserID: id[user], UserName: user, Provider: provider, Model: model,
			Path: "/v1/chat/completions", Status: status, Duration: 800 * time.Millisecond}
		if p >= 0 {
			rec.PromptTokens, rec.CompletionTokens, rec.TotalTokens = i64(p), i64(c), i64(p+c)
		}
		return rec
	}
	partial := u(at(4, 9), "bob", "api.groq.com", "llama-3.3-70b", 200, 40, 10)
	partial.Partial, partial.Streamed = true, true
	return []aiproxy.Usage{
		u(at(2, 10), "alice", "api.openai.com", "gpt-4o", 200, 1200, 300),
		u(at(2, 11), "alice", "api.openai.com", "gpt-4o-mini", 200, 100, 50),
		u(at(3, 8), "alice", "api.openai.com", "gpt-4o", 500, -1, 0),
		u(at(3, 9), "bob", "api.groq.com", "llama-3.3-70b", 200, 600, 200),
		partial,
		u(at(4, 12), "bob", "api.groq.com", "", 429, -1, 0),
	}
}
