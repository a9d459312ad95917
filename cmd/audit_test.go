package cmd

import (
	"encoding/json"
	"os/user"
	"strings"
	"testing"
)

// TestAuditCmd_CLIChangesAreRecorded: every CLI change, done or refused, is
// in `aiproxy audit`, with source cli and the OS user, and --json has the
// contract's fields; a provider key never appears.
func TestAuditCmd_CLIChangesAreRecorded(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	const provKey = "sk-provider-secret-0123456789abcdef"
	runOK(t, "--db", db, "user", "create", "alice")
	run(t, "", "--db", db, "user", "create", "alice") // refused: conflict
	runOK(t, "--db", db, "user", "expire", "alice", "--in", "7d")
	if r := run(t, provKey+"\n", "--db", db, "provider", "add", "api.example.com", "-"); r.Code != 0 {
		t.Fatalf("provider add: %+v", r)
	}
	runOK(t, "--db", db, "provider", "remove", "api.example.com")
	runOK(t, "--db", db, "user", "delete", "alice")
	runOK(t, "--db", db, "user", "list") // not a change: not recorded

	out := runOK(t, "--db", db, "audit", "--json")
	if strings.Contains(out, provKey) {
		t.Errorf("audit --json holds the provider key: %s", out)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("audit --json: %v in %s", err, out)
	}
	wantActor := ""
	if u, err := user.Current(); err == nil {
		wantActor = u.Username
	}
	want := []string{"user.create alice ok", "user.create alice refused: conflict", "user.expire alice ok",
		"provider.add api.example.com ok", "provider.remove api.example.com ok", "user.delete alice ok"}
	var got []string
	for _, r := range rows {
		for _, k := range []string{"time", "source", "actor", "action", "target", "result"} {
			if _, ok := r[k]; !ok {
				t.Errorf("audit row %v lacks %q", r, k)
			}
		}
		if r["source"] != "cli" || (wantActor != "" && r["actor"] != wantActor) {
			t.Errorf("audit row %v: want source cli, actor %q", r, wantActor)
		}
		got = append(got, r["action"].(string)+" "+r["target"].(string)+" "+r["result"].(string))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	plain := runOK(t, "--db", db, "audit", "--since", "1h")
	if lines := strings.Split(strings.TrimSpace(plain), "\n"); len(lines) != len(want)+1 || !strings.HasPrefix(lines[0], "TIME") {
		t.Errorf("audit --since 1h:\n%s\nwant a header and %d rows", plain, len(want))
	}
}

// TestAuditCmd_MalformedSince: a malformed --since is one clear line.
func TestAuditCmd_MalformedSince(t *testing.T) {
	t.Parallel()
	r := run(t, "", "--db", newDBPath(t), "audit", "--since", "last tuesday")
	checkFailed(t, r, "last tuesday")
}
