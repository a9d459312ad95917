package cmd

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// TestMigrate_CopiesSQLiteIntoPostgres: `aiproxy migrate --from FILE --to
// DSN` copies a user, a provider key, a limit and a price made with the CLI
// on a file (secret: its key file) into PostgreSQL (secret:
// AIPROXY_SECRET_KEY); the CLI on the target lists them, the user's key
// authenticates there and the provider key, re-sealed, reaches the
// upstream; a second migrate into the now non-empty target is refused with
// one line.
func TestMigrate_CopiesSQLiteIntoPostgres(t *testing.T) {
	var gotAuth string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"local-model","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`)
	}))
	defer upstream.Close()

	file := filepath.Join(t.TempDir(), "aiproxy.db")
	dsn := pgtest.NewDatabase(t)
	onFile := func(args ...string) string {
		t.Helper()
		r := runEnv(t, nil, append([]string{"--db", file}, args...)...)
		if r.Code != 0 {
			t.Fatalf("aiproxy %s: exit %d, stderr %q", strings.Join(args, " "), r.Code, r.Err)
		}
		return r.Out
	}
	userKey := strings.TrimSpace(onFile("user", "create", "alice", "--rpm", "5"))
	onFile("provider", "add", "local.test", "sk-upstream-secret", "--base-url", upstream.URL, "--alias", "local")
	onFile("price", "set", "local-model", "--input", "1", "--output", "2")

	pgEnv := map[string]string{"AIPROXY_SECRET_KEY": pgTestSecret}
	r := runEnv(t, pgEnv, "migrate", "--from", file, "--to", dsn)
	if r.Code != 0 || r.Out != "" || !strings.Contains(r.Err, "users 1") {
		t.Fatalf("migrate = exit %d, stdout %q, stderr %q; want 0, nothing, a summary", r.Code, r.Out, r.Err)
	}
	if strings.Contains(r.Err, "postgres@") {
		t.Errorf("migrate's summary shows the DSN's user: %q", r.Err)
	}

	onPG := map[string]string{"AIPROXY_SECRET_KEY": pgTestSecret, "AIPROXY_DB": dsn}
	for _, want := range []struct {
		args []string
		has  string
	}{
		{[]string{"user", "list", "--json"}, `"alice"`},
		{[]string{"user", "list", "--json"}, `"rpm": 5`},
		{[]string{"provider", "list", "--json"}, `"local"`},
		{[]string{"price", "list", "--json"}, `"local-model"`},
		{[]string{"audit", "--json"}, `"provider.add"`},
	} {
		if r := runEnv(t, onPG, want.args...); r.Code != 0 || !strings.Contains(r.Out, want.has) {
			t.Errorf("on the target, aiproxy %s = %d %s %s; want %s in it", strings.Join(want.args, " "), r.Code, r.Out, r.Err, want.has)
		}
	}

	// A request with the copied user key, through the re-sealed provider key.
	db, err := store.Open(t.Context(), dsn, store.WithSecretKey(pgTestSecret, "AIPROXY_SECRET_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc := admin.New(db)
	log := slog.New(slog.DiscardHandler)
	rec := usage.New(svc.RecordUsage, log, 100)
	px := proxy.New(svc, rec, log, proxy.Config{})
	srv := httptest.NewServer(server.New(svc, px, log, server.Config{}))
	defer func() { srv.Close(); px.CloseIdle(); rec.Close(context.Background()) }()
	req, _ := http.NewRequest("POST", srv.URL+"/local/v1/chat/completions", strings.NewReader(`{"model":"local-model","messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+userKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || gotAuth != "Bearer sk-upstream-secret" {
		t.Errorf("request on the target = %d %s, upstream saw Authorization %q; want 200 and the provider key", resp.StatusCode, body, gotAuth)
	}

	// Once more: the target is not empty now.
	r = runEnv(t, pgEnv, "migrate", "--from", file, "--to", dsn)
	if r.Code == 0 || !strings.Contains(r.Err, "not empty") || strings.Count(strings.TrimSpace(r.Err), "\n") != 0 {
		t.Errorf("second migrate = exit %d, stderr %q; want a failure in one line saying the target is not empty", r.Code, r.Err)
	}
	// Bad input, one line each.
	for _, args := range [][]string{
		{"migrate", "--to", dsn},
		{"migrate", "--from", filepath.Join(t.TempDir(), "missing.db"), "--to", dsn},
		{"migrate", "--from", file, "--to", filepath.Join(t.TempDir(), "other.db")},
	} {
		if r := runEnv(t, pgEnv, args...); r.Code == 0 || strings.Count(strings.TrimSpace(r.Err), "\n") != 0 {
			t.Errorf("aiproxy %s = exit %d, stderr %q; want a failure in one line", strings.Join(args, " "), r.Code, r.Err)
		}
	}
}
