package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

const pgTestSecret = "Y21kIHBvc3RncmVzIHNlY3JldCwgMzIgYnl0ZXMhISE="

// TestPostgres_EveryCommand: the admin commands work on a PostgreSQL
// database named by AIPROXY_DB (or --db, or the config file's db) with
// AIPROXY_SECRET_KEY, as on a file; backup, which copies a file, says to
// use pg_dump; without a secret every command refuses with one line.
func TestPostgres_EveryCommand(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	env := map[string]string{"AIPROXY_DB": dsn, "AIPROXY_SECRET_KEY": pgTestSecret}
	ok := func(args ...string) string {
		t.Helper()
		r := runEnv(t, env, args...)
		if r.Code != 0 {
			t.Fatalf("aiproxy %s: exit %d, stderr %q", strings.Join(args, " "), r.Code, r.Err)
		}
		return r.Out
	}
	ok("user", "create", "alice", "--rpm", "5")
	ok("user", "reset", "alice")
	ok("user", "limit", "alice", "--spend", "5/month", "--models", "gpt-*")
	ok("user", "limit", "*", "--tokens", "1000/day")
	ok("provider", "add", "api.example.com", "sk-example-upstream-key", "--base-url", "https://api.example.com")
	ok("provider", "set", "api.example.com", "--alias", "ex")
	ok("price", "set", "gpt-x", "--input", "1", "--output", "2")
	for _, want := range []struct {
		args []string
		has  string
	}{
		{[]string{"user", "list", "--json"}, `"alice"`},
		{[]string{"provider", "list", "--json"}, `"ex"`},
		{[]string{"price", "list", "--json"}, `"gpt-x"`},
		{[]string{"stats", "--by", "user", "--json"}, `[`},
		{[]string{"audit", "--json"}, `"user.create"`},
	} {
		if out := ok(want.args...); !strings.Contains(out, want.has) {
			t.Errorf("aiproxy %s = %s, want %s in it", strings.Join(want.args, " "), out, want.has)
		}
	}
	if out := ok("provider", "list", "--json"); strings.Contains(out, "sk-example-upstream-key") {
		t.Errorf("provider list shows the key: %s", out)
	}

	// --db and the config file select it as AIPROXY_DB does.
	noDB := map[string]string{"AIPROXY_SECRET_KEY": pgTestSecret}
	if r := runEnv(t, noDB, "--db", dsn, "user", "list"); r.Code != 0 || !strings.Contains(r.Out, "alice") {
		t.Errorf("--db DSN user list = %d %q %q", r.Code, r.Out, r.Err)
	}
	cfg := writeConfig(t, "db: "+dsn+"\n")
	if r := runEnv(t, noDB, "--config", cfg, "user", "list"); r.Code != 0 || !strings.Contains(r.Out, "alice") {
		t.Errorf("config db: DSN user list = %d %q %q", r.Code, r.Out, r.Err)
	}

	r := runEnv(t, env, "backup", filepath.Join(t.TempDir(), "b.db"))
	if r.Code != 1 || !strings.Contains(r.Err, "pg_dump") {
		t.Errorf("backup on PostgreSQL = %d %q, want exit 1 naming pg_dump", r.Code, r.Err)
	}
	r = runEnv(t, map[string]string{"AIPROXY_DB": dsn}, "user", "list")
	if r.Code != 1 || strings.Count(r.Err, "\n") != 1 || !strings.Contains(r.Err, "AIPROXY_SECRET_KEY") {
		t.Errorf("user list without a secret = %d %q, want one line naming AIPROXY_SECRET_KEY", r.Code, r.Err)
	}

	// rekey re-seals under a new secret; the old one no longer opens them.
	newKey := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(newKey, []byte("bmV3IHBvc3RncmVzIHNlY3JldCwgMzIgYnl0ZXMhISE=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok("rekey", "--new-secret-key-file", newKey)
	if r := runEnv(t, env, "provider", "add", "api.example.com", "sk-another-upstream-key"); r.Code != 1 {
		t.Errorf("provider add with the old secret after rekey = %d %q, want refused", r.Code, r.Err)
	}
	if r := runEnv(t, noDB, "--db", dsn, "--secret-key-file", newKey, "user", "delete", "alice"); r.Code != 0 {
		t.Errorf("user delete with the new secret = %d %q", r.Code, r.Err)
	}
}
