package cmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func TestPrice_setListRemove(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	if out := runOK(t, "--db", db, "price", "set", "openai/gpt-oss-120b", "--input", "0.2", "--output", "0.8", "--cached-input", "0.1"); out != "" {
		t.Errorf("price set printed %q, want nothing", out)
	}
	runOK(t, "--db", db, "price", "set", "my-local/model", "--input", "0", "--output", "0")

	var rows []map[string]any
	if err := json.Unmarshal([]byte(runOK(t, "--db", db, "price", "list", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]any{}
	for _, r := range rows {
		got[r["model"].(string)] = r
	}
	want := map[string]map[string]any{
		"openai/gpt-oss-120b": {"model": "openai/gpt-oss-120b", "input": 0.2, "output": 0.8, "cached_input": 0.1, "built_in": false},
		"my-local/model":      {"model": "my-local/model", "input": 0.0, "output": 0.0, "cached_input": nil, "built_in": false},
		"gpt-4o":              {"model": "gpt-4o", "input": 2.5, "output": 10.0, "cached_input": 1.25, "built_in": true},
	}
	for m, w := range want {
		if diff := cmp.Diff(w, got[m]); diff != "" {
			t.Errorf("price list --json row %s (-want +got):\n%s", m, diff)
		}
	}

	plain := runOK(t, "--db", db, "price", "list")
	for _, line := range []string{
		"MODEL", "CACHED INPUT", "SOURCE",
		"openai/gpt-oss-120b", "set, replaces built-in",
		"my-local/model", "0.00",
		"gpt-4o", "built-in ",
	} {
		if !strings.Contains(plain, line) {
			t.Errorf("price list output lacks %q:\n%s", line, plain)
		}
	}

	runOK(t, "--db", db, "price", "remove", "openai/gpt-oss-120b")
	runOK(t, "--db", db, "price", "rm", "my-local/model")
	stored, err := openService(t, db).ListPrices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range stored {
		if !p.BuiltIn {
			t.Errorf("after remove, %+v is still set", p)
		}
		if p.Model == "openai/gpt-oss-120b" && p.Input != 0.15 {
			t.Errorf("after remove, openai/gpt-oss-120b = %+v, want the built-in price", p)
		}
	}
}

// TestPrice_errorsAreOneLineAndChangeNothing: each bad command fails with
// one line naming what is wrong, and leaves the stored prices as they were.
func TestPrice_errorsAreOneLineAndChangeNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"non-numeric input", []string{"price", "set", "m", "--input", "abc", "--output", "1"}, `invalid input price "abc"`},
		{"negative output", []string{"price", "set", "m", "--input", "1", "--output", "-2"}, "invalid output price -2"},
		{"negative cached input", []string{"price", "set", "m", "--input", "1", "--output", "2", "--cached-input", "-1"}, "invalid cached input price -1"},
		{"NaN", []string{"price", "set", "m", "--input", "NaN", "--output", "1"}, "invalid input price NaN"},
		{"no output", []string{"price", "set", "m", "--input", "1"}, "the output price is required"},
		{"no input", []string{"price", "set", "m", "--output", "1"}, "the input price is required"},
		{"unknown flag", []string{"price", "set", "m", "--input", "1", "--output", "1", "--cache", "1"}, "unknown flag: --cache"},
		{"no model", []string{"price", "set", "--input", "1", "--output", "1"}, "missing MODEL"},
		{"model with a space", []string{"price", "set", "gpt 4o", "--input", "1", "--output", "1"}, "space or a control character"},
		{"remove a built-in price", []string{"price", "remove", "gpt-4o"}, `model "gpt-4o" has only a built-in price`},
		{"remove an unknown model", []string{"price", "remove", "nope"}, `model "nope" has no price`},
		{"list with an argument", []string{"price", "list", "x"}, `unexpected argument "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			runOK(t, "--db", db, "price", "set", "kept", "--input", "1", "--output", "2")
			checkFailed(t, run(t, "", append([]string{"--db", db}, tc.args...)...), tc.want)
			svc := openService(t, db)
			stored, err := svc.ListPrices(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var set []string
			for _, p := range stored {
				if !p.BuiltIn {
					set = append(set, p.Model)
				}
			}
			if diff := cmp.Diff([]string{"kept"}, set); diff != "" {
				t.Errorf("prices set after a failed command (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStats_costUSD: stats show the stored costs summed, with 6 decimals,
// null (JSON) or "-" (text) for a group with nothing priced, and the count
// of unmetered requests.
func TestStats_costUSD(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	svc := openService(t, db)
	ctx := t.Context()
	if _, err := svc.CreateUser(ctx, "alice", admin.Expiry{}); err != nil {
		t.Fatal(err)
	}
	users, err := svc.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	rec := func(model string, cost *float64, unmetered bool) aiproxy.Usage {
		return aiproxy.Usage{Time: at, UserID: users[0].ID, UserName: "alice", Provider: "api.openai.com", Model: model,
			Path: "/v1/chat/completions", Status: 200, CostUSD: cost, Unmetered: unmetered}
	}
	c1, c2 := 0.006, 0.000045
	if err := svc.RecordUsage(ctx, []aiproxy.Usage{
		rec("gpt-4o", &c1, false), rec("gpt-4o", &c2, false), rec("local", nil, true),
	}); err != nil {
		t.Fatal(err)
	}
	js := runOK(t, "--db", db, "stats", "--by", "model", "--json")
	for _, want := range []string{`"cost_usd": 0.006045`, `"cost_usd": null`, `"unmetered": 1`} {
		if !strings.Contains(js, want) {
			t.Errorf("stats --json lacks %s:\n%s", want, js)
		}
	}
	text := runOK(t, "--db", db, "stats")
	if !strings.Contains(text, "COST USD") || !strings.Contains(text, "0.006045") {
		t.Errorf("stats lacks the cost column or total:\n%s", text)
	}
}
