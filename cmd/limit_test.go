package cmd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUserLimit_setsLimitsThatUserListShows(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	createKey(t, db, "alice")
	createKey(t, db, "bob")
	out := runOK(t, "--db", db, "user", "limit", "alice", "--rpm", "60", "--tokens", "1000/total",
		"--models", "gpt-4o*,o1", "--json")
	var row struct {
		Name   string          `json:"name"`
		Limits json.RawMessage `json:"limits"`
	}
	if err := json.Unmarshal([]byte(out), &row); err != nil || row.Name != "alice" {
		t.Fatalf("user limit --json printed %q (%v), want alice's row", out, err)
	}
	want := `{"rpm":60,"tpm":null,"concurrent":null,"tokens":{"limit":1000,"period":"total","used":0,"resets_at":null},` +
		`"spend":null,"models":["gpt-4o*","o1"],"default":false}`
	var got bytes.Buffer
	if err := json.Compact(&got, row.Limits); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.String()); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	if out := runOK(t, "--db", db, "user", "limit", "alice", "--rpm", "none"); out != "" {
		t.Errorf("user limit without --json printed %q, want nothing", out)
	}
	runOK(t, "--db", db, "user", "limit", "*", "--concurrent", "2")
	list := runOK(t, "--db", db, "user", "list")
	for _, want := range []string{
		"0/1000 tokens in total, models gpt-4o*,o1\n", // alice's own, rpm removed
		"2 at once (default)\n",                       // bob's, the defaults
	} {
		if !strings.Contains(list, want) {
			t.Errorf("user list =\n%s\nwant a row ending %q", list, want)
		}
	}
	runOK(t, "--db", db, "user", "limit", "alice", "--clear")
	if list := runOK(t, "--db", db, "user", "list"); strings.Count(list, "2 at once (default)") != 2 {
		t.Errorf("after --clear, user list =\n%s\nwant alice on the defaults too", list)
	}
}

func TestUserLimit_badValuesFailWithOneLineAndChangeNothing(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	createKey(t, db, "alice")
	runOK(t, "--db", db, "user", "limit", "alice", "--rpm", "5")
	before := runOK(t, "--db", db, "user", "list", "--json")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"negative", []string{"alice", "--rpm=-5"}, `invalid rpm "-5": it is negative`},
		{"unknown period", []string{"alice", "--tokens", "5/fortnight"}, `unknown period "fortnight"`},
		{"unknown unit", []string{"alice", "--spend", "5EUR/month"}, `invalid spend "5EUR/month"`},
		{"no period", []string{"alice", "--spend", "5"}, "the period is missing"},
		{"good then bad", []string{"alice", "--tpm", "100", "--concurrent", "x"}, `invalid concurrent "x"`},
		{"nothing to change", []string{"alice"}, "give at least one of --rpm"},
		{"missing user", []string{"bob", "--rpm", "1"}, "user bob not found"},
		{"bad name", []string{"a b", "--rpm", "1"}, "user name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkFailed(t, run(t, "", append([]string{"--db", db, "user", "limit"}, tc.args...)...), tc.want)
		})
	}
	if after := runOK(t, "--db", db, "user", "list", "--json"); after != before {
		t.Errorf("refused changes changed the users:\n%s\nwas\n%s", after, before)
	}
}

func TestUserCreate_takesTheLimitFlags(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	r := run(t, "", "--db", db, "user", "create", "bob", "--tokens", "5/fortnight")
	checkFailed(t, r, `unknown period "fortnight"`)
	if users := listUsers(t, db); len(users) != 0 {
		t.Errorf("a refused create made %v", users)
	}
	createKey(t, db, "bob", "--spend", "5/total", "--models", "gpt-4o*")
	u := userByName(t, db, "bob")
	if u.Limits.Spend == nil || u.Limits.Spend.LimitUSD != 5 || u.Limits.Default {
		t.Errorf("bob's limits = %+v, want his own $5 spend limit", u.Limits)
	}
}
