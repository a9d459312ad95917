package admin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func limitsUpdate(kv ...string) admin.LimitsUpdate {
	var up admin.LimitsUpdate
	for i := 0; i < len(kv); i += 2 {
		up.Changes = append(up.Changes, admin.LimitChange{Field: kv[i], Value: kv[i+1]})
	}
	return up
}

func ptr[T any](v T) *T { return &v }

// rowJSON is user name's row as `user list --json` shows it.
func (f fixture) rowJSON(t *testing.T, name string) string {
	t.Helper()
	u, err := f.svc.UserRow(t.Context(), name)
	if err != nil {
		t.Fatalf("UserRow(%q) error = %v", name, err)
	}
	b, err := json.Marshal(u.Limits)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSetLimits_RowShowsTheContractsJSONWithUsedAndResetsAt: what the
// current periods used comes from the usage records (charged where the
// limiter charged, else the real usage; errors are not usage).
func TestSetLimits_RowShowsTheContractsJSONWithUsedAndResetsAt(t *testing.T) {
	t.Parallel()
	f := newService(t) // t0: Saturday 2026-03-14 12:00 UTC
	f.createUser(t, "alice", admin.Expiry{})
	u, err := f.svc.SetLimits(t.Context(), "alice", limitsUpdate("rpm", "60", "tokens", "100000/day",
		"spend", "$5/month", "models", "gpt-4o*, o1"))
	if err != nil {
		t.Fatalf("SetLimits() error = %v", err)
	}
	if u.Name != "alice" || u.Limits.RPM == nil || *u.Limits.RPM != 60 {
		t.Errorf("SetLimits() row = %+v, want alice's with rpm 60", u)
	}
	alice, _ := f.db.UserByName(t.Context(), "alice")
	err = f.db.InsertUsage(t.Context(), []aiproxy.Usage{
		{Time: t0.Add(-time.Hour), UserID: alice.ID, UserName: "alice", Status: 200, TotalTokens: ptr[int64](1000), CostUSD: ptr(0.25)},
		{Time: t0.Add(-time.Hour), UserID: alice.ID, UserName: "alice", Status: 200, ChargedTokens: 4096, ChargedMicroUSD: 40960},
		{Time: t0.Add(-time.Hour), UserID: alice.ID, UserName: "alice", Status: 502, TotalTokens: ptr[int64](7)},
		{Time: t0.Add(-13 * time.Hour), UserID: alice.ID, UserName: "alice", Status: 200, TotalTokens: ptr[int64](500), CostUSD: ptr(1.0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"rpm":60,"tpm":null,"concurrent":null,` +
		`"tokens":{"limit":100000,"period":"day","used":5096,"resets_at":"2026-03-15T00:00:00Z"},` +
		`"spend":{"limit_usd":5,"period":"month","used_usd":1.29096,"resets_at":"2026-04-01T00:00:00Z"},` +
		`"models":["gpt-4o*","o1"],"default":false}`
	if diff := cmp.Diff(want, f.rowJSON(t, "alice")); diff != "" {
		t.Errorf("limits JSON (-want +got):\n%s", diff)
	}
	me, err := f.svc.Me(t.Context(), f.keys.made[0])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u.Limits.RPM, me.Limits.RPM); diff != "" || me.Limits.Tokens == nil || me.Limits.Tokens.Used != 5096 {
		t.Errorf("Me().Limits = %+v, want the row's limits with 5096 tokens used", me.Limits)
	}
}

func TestSetLimits_DefaultsApplyToUsersWithoutTheirOwn(t *testing.T) {
	t.Parallel()
	f := newService(t)
	f.createUser(t, "alice", admin.Expiry{})
	const none = `{"rpm":null,"tpm":null,"concurrent":null,"tokens":null,"spend":null,"models":null,"default":true}`
	if got := f.rowJSON(t, "alice"); got != none {
		t.Errorf("no limits anywhere: %s, want %s", got, none)
	}
	if _, err := f.svc.SetLimits(t.Context(), "*", limitsUpdate("rpm", "10", "tokens", "1000/total")); err != nil {
		t.Fatal(err)
	}
	want := `{"rpm":10,"tpm":null,"concurrent":null,"tokens":{"limit":1000,"period":"total","used":0,"resets_at":null},` +
		`"spend":null,"models":null,"default":true}`
	if got := f.rowJSON(t, "alice"); got != want {
		t.Errorf("defaults: %s, want %s", got, want)
	}
	if got := f.rowJSON(t, "*"); got != want {
		t.Errorf("the * row: %s, want %s", got, want)
	}
	// Own limits replace the defaults as a whole; none removes one.
	if _, err := f.svc.SetLimits(t.Context(), "alice", limitsUpdate("concurrent", "2", "tpm", "100")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SetLimits(t.Context(), "alice", limitsUpdate("tpm", "none")); err != nil {
		t.Fatal(err)
	}
	own := `{"rpm":null,"tpm":null,"concurrent":2,"tokens":null,"spend":null,"models":null,"default":false}`
	if got := f.rowJSON(t, "alice"); got != own {
		t.Errorf("own limits: %s, want %s", got, own)
	}
	if _, err := f.svc.SetLimits(t.Context(), "alice", admin.LimitsUpdate{Clear: true}); err != nil {
		t.Fatal(err)
	}
	if got := f.rowJSON(t, "alice"); got != want {
		t.Errorf("after --clear: %s, want the defaults %s", got, want)
	}
}

// TestSetLimits_BadValuesAreRefusedNamingTheFieldAndChangeNothing.
func TestSetLimits_BadValuesAreRefusedNamingTheFieldAndChangeNothing(t *testing.T) {
	t.Parallel()
	f := newService(t)
	f.createUser(t, "alice", admin.Expiry{})
	if _, err := f.svc.SetLimits(t.Context(), "alice", limitsUpdate("rpm", "60")); err != nil {
		t.Fatal(err)
	}
	before := f.rowJSON(t, "alice")
	tests := []struct {
		name     string
		up       admin.LimitsUpdate
		contains string
	}{
		{"negative", limitsUpdate("rpm", "-5"), `invalid rpm "-5": it is negative`},
		{"not a number", limitsUpdate("tpm", "lots"), `invalid tpm "lots"`},
		{"a fraction", limitsUpdate("concurrent", "1.5"), `invalid concurrent "1.5"`},
		{"unknown period", limitsUpdate("tokens", "5/fortnight"), `unknown period "fortnight"`},
		{"no period", limitsUpdate("spend", "5"), `invalid spend "5": the period is missing`},
		{"unknown unit", limitsUpdate("spend", "5EUR/month"), `invalid spend "5EUR/month"`},
		{"negative spend", limitsUpdate("spend", "-1/day"), `invalid spend "-1/day": it is negative`},
		{"empty model", limitsUpdate("models", "gpt-4o,,o1"), `invalid models`},
		{"unknown limit", limitsUpdate("rph", "5"), `unknown limit "rph"`},
		{"good then bad", limitsUpdate("rpm", "5", "tokens", "-1/day"), `invalid tokens "-1/day"`},
		{"nothing", admin.LimitsUpdate{}, "nothing to change"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.SetLimits(t.Context(), "alice", tc.up)
			wantCode(t, "SetLimits", err, aiproxy.EINVALID)
			if err == nil || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("SetLimits() error = %v, want it to say %q", err, tc.contains)
			}
			if got := f.rowJSON(t, "alice"); got != before {
				t.Errorf("limits changed by a refused update: %s, was %s", got, before)
			}
		})
	}
}

func TestSetLimits_MissingUserAndBadName(t *testing.T) {
	t.Parallel()
	f := newService(t)
	wantCode(t, "SetLimits(missing)", errOf(f.svc.SetLimits(t.Context(), "bob", limitsUpdate("rpm", "1"))), aiproxy.ENOTFOUND)
	wantCode(t, "SetLimits(bad name)", errOf(f.svc.SetLimits(t.Context(), "a b", limitsUpdate("rpm", "1"))), aiproxy.EINVALID)
}

func TestCreateUserWithLimits_ABadLimitCreatesNoUser(t *testing.T) {
	t.Parallel()
	f := newService(t)
	_, err := f.svc.CreateUserWithLimits(t.Context(), "bob", admin.Expiry{}, limitsUpdate("tokens", "5/fortnight"))
	wantCode(t, "CreateUserWithLimits", err, aiproxy.EINVALID)
	if users, _ := f.svc.ListUsers(t.Context()); len(users) != 0 {
		t.Errorf("users after a refused create: %v, want none", users)
	}
	if _, err := f.svc.CreateUserWithLimits(t.Context(), "bob", admin.Expiry{}, limitsUpdate("rpm", "7")); err != nil {
		t.Fatal(err)
	}
	if got := f.rowJSON(t, "bob"); !strings.Contains(got, `"rpm":7`) {
		t.Errorf("bob's limits = %s, want rpm 7", got)
	}
}

// TestDeleteUser_TakesItsLimits: a re-created user starts on the defaults.
func TestDeleteUser_TakesItsLimits(t *testing.T) {
	t.Parallel()
	f := newService(t)
	f.createUser(t, "alice", admin.Expiry{})
	if _, err := f.svc.SetLimits(t.Context(), "alice", limitsUpdate("rpm", "1")); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DeleteUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	f.createUser(t, "alice", admin.Expiry{})
	if got := f.rowJSON(t, "alice"); !strings.Contains(got, `"rpm":null`) || !strings.Contains(got, `"default":true`) {
		t.Errorf("re-created alice's limits = %s, want the (empty) defaults", got)
	}
}
