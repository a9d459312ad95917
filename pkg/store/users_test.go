package store_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

func ptr[T any](v T) *T { return &v }

func TestCreateUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	exp := t0.Add(30 * 24 * time.Hour)
	k := createUser(t, d, "alice", &exp)

	want := aiproxy.User{Name: "alice", KeyHint: keys.Hint(k), CreatedAt: t0, ExpiresAt: &exp}
	ignoreID := cmpopts.IgnoreFields(aiproxy.User{}, "ID")
	byHash, err := d.UserByKeyHash(ctx, keys.Hash(k))
	if err != nil {
		t.Fatalf("UserByKeyHash() error = %v", err)
	}
	if diff := cmp.Diff(want, byHash, ignoreID); diff != "" {
		t.Errorf("UserByKeyHash() mismatch (-want +got):\n%s", diff)
	}
	byName, err := d.UserByName(ctx, "alice")
	if err != nil {
		t.Fatalf("UserByName() error = %v", err)
	}
	if diff := cmp.Diff(byHash, byName); diff != "" {
		t.Errorf("UserByName() and UserByKeyHash() differ (-hash +name):\n%s", diff)
	}
	if byHash.ID == 0 {
		t.Errorf("UserByKeyHash() ID = 0, want the row id")
	}

	// Times come back in UTC whatever zone they went in with.
	local := t0.In(time.FixedZone("X", 5*3600))
	k2 := keys.New()
	if err := d.CreateUser(ctx, "bob", keys.Hash(k2), keys.Hint(k2), local, nil); err != nil {
		t.Fatal(err)
	}
	if u, _ := d.UserByName(ctx, "bob"); u.CreatedAt != t0 || u.ExpiresAt != nil {
		t.Errorf("UserByName(bob) = %+v, want created %v (UTC) and no expiry", u, t0)
	}
}

func TestCreateUser_Duplicate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	first := createUser(t, d, "alice", nil)
	k := keys.New()
	err := d.CreateUser(ctx, "alice", keys.Hash(k), keys.Hint(k), t0, nil)
	wantCode(t, `CreateUser("alice") again`, err, aiproxy.ECONFLICT)
	if err != nil && !strings.Contains(err.Error(), "alice") {
		t.Errorf("CreateUser duplicate message = %q, want it to name the user", err)
	}
	// The first key still works and the second does not.
	if _, err := d.UserByKeyHash(ctx, keys.Hash(first)); err != nil {
		t.Errorf("first key after the duplicate: %v", err)
	}
	wantCode(t, "UserByKeyHash(refused key)", errOf(d.UserByKeyHash(ctx, keys.Hash(k))), aiproxy.EUNAUTHORIZED)
}

func errOf[T any](_ T, err error) error { return err }

func TestUsers_Missing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	createUser(t, d, "alice", nil)
	k := keys.New()
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"ResetUserKey", d.ResetUserKey(ctx, "nobody", keys.Hash(k), keys.Hint(k), false, nil), aiproxy.ENOTFOUND},
		{"ResetUserKey with expiry", d.ResetUserKey(ctx, "nobody", keys.Hash(k), keys.Hint(k), true, nil), aiproxy.ENOTFOUND},
		{"DeleteUser", d.DeleteUser(ctx, "nobody"), aiproxy.ENOTFOUND},
		{"SetUserExpiry", d.SetUserExpiry(ctx, "nobody", ptr(t0)), aiproxy.ENOTFOUND},
		{"UserByName", errOf(d.UserByName(ctx, "nobody")), aiproxy.ENOTFOUND},
		{"UserByKeyHash", errOf(d.UserByKeyHash(ctx, keys.Hash(k))), aiproxy.EUNAUTHORIZED},
		{"ReplaceUserKey", errOf(d.ReplaceUserKey(ctx, keys.Hash(k), keys.Hash(keys.New()), "x")), aiproxy.EUNAUTHORIZED},
		{"names are exact, not case-folded", d.DeleteUser(ctx, "Alice"), aiproxy.ENOTFOUND},
	}
	for _, tc := range tests {
		wantCode(t, tc.name+"(missing)", tc.err, tc.code)
	}
	if _, err := d.UserByName(ctx, "alice"); err != nil {
		t.Errorf("alice after operations on other names: %v", err)
	}
}

func TestResetUserKey(t *testing.T) {
	t.Parallel()
	exp := t0.Add(24 * time.Hour)
	later := t0.Add(72 * time.Hour)
	tests := []struct {
		name      string
		setExpiry bool
		newExpiry *time.Time
		want      *time.Time
	}{
		{"keeps expiry", false, nil, &exp},
		{"keeps expiry even if one is passed", false, &later, &exp},
		{"sets expiry", true, &later, &later},
		{"clears expiry", true, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			d := newTestStore(t)
			old := createUser(t, d, "alice", &exp)
			before, _ := d.UserByName(ctx, "alice")
			nk := keys.New()
			if err := d.ResetUserKey(ctx, "alice", keys.Hash(nk), keys.Hint(nk), tc.setExpiry, tc.newExpiry); err != nil {
				t.Fatalf("ResetUserKey() error = %v", err)
			}
			wantCode(t, "UserByKeyHash(old key)", errOf(d.UserByKeyHash(ctx, keys.Hash(old))), aiproxy.EUNAUTHORIZED)
			u, err := d.UserByKeyHash(ctx, keys.Hash(nk))
			if err != nil {
				t.Fatalf("UserByKeyHash(new key) error = %v", err)
			}
			want := before
			want.KeyHint = keys.Hint(nk)
			want.ExpiresAt = tc.want
			if diff := cmp.Diff(want, u); diff != "" {
				t.Errorf("user after reset mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetUserExpiry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	k := createUser(t, d, "alice", nil)
	exp := t0.Add(time.Hour)
	if err := d.SetUserExpiry(ctx, "alice", &exp); err != nil {
		t.Fatal(err)
	}
	if u, _ := d.UserByKeyHash(ctx, keys.Hash(k)); u.ExpiresAt == nil || !u.ExpiresAt.Equal(exp) {
		t.Errorf("ExpiresAt after SetUserExpiry = %v, want %v", u.ExpiresAt, exp)
	}
	if err := d.SetUserExpiry(ctx, "alice", nil); err != nil {
		t.Fatal(err)
	}
	if u, _ := d.UserByKeyHash(ctx, keys.Hash(k)); u.ExpiresAt != nil {
		t.Errorf("ExpiresAt after SetUserExpiry(nil) = %v, want nil (never)", u.ExpiresAt)
	}
}

func TestDeleteUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	k := createUser(t, d, "alice", nil)
	createUser(t, d, "bob", nil)
	if err := d.DeleteUser(ctx, "alice"); err != nil {
		t.Fatalf("DeleteUser() error = %v", err)
	}
	wantCode(t, "UserByKeyHash(deleted user's key)", errOf(d.UserByKeyHash(ctx, keys.Hash(k))), aiproxy.EUNAUTHORIZED)
	wantCode(t, "DeleteUser(alice) again", d.DeleteUser(ctx, "alice"), aiproxy.ENOTFOUND)
	users, err := d.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"bob"}, names(users)); diff != "" {
		t.Errorf("ListUsers() after delete mismatch (-want +got):\n%s", diff)
	}
	// The name is free again.
	createUser(t, d, "alice", nil)
}

// TestReplaceUserKey_Concurrent races 20 self-resets with one old key:
// exactly one wins, the others are told the key is invalid, and exactly
// one live key remains.
func TestReplaceUserKey_Concurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	old := createUser(t, d, "alice", nil)
	createUser(t, d, "bob", nil)

	const n = 20
	newKeys := make([]string, n)
	errs := make([]error, n)
	users := make([]aiproxy.User, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		newKeys[i] = keys.New()
		wg.Go(func() {
			<-start
			users[i], errs[i] = d.ReplaceUserKey(ctx, keys.Hash(old), keys.Hash(newKeys[i]), keys.Hint(newKeys[i]))
		})
	}
	close(start)
	wg.Wait()

	winners := 0
	for i, err := range errs {
		switch aiproxy.ErrorCode(err) {
		case "":
			winners++
			if users[i].Name != "alice" || users[i].KeyHint != keys.Hint(newKeys[i]) {
				t.Errorf("winning ReplaceUserKey() user = %+v, want alice with the new hint", users[i])
			}
		case aiproxy.EUNAUTHORIZED:
		default:
			t.Errorf("ReplaceUserKey() #%d error = %v, want nil or EUNAUTHORIZED", i, err)
		}
	}
	if winners != 1 {
		t.Errorf("%d concurrent ReplaceUserKey calls succeeded, want exactly 1", winners)
	}
	live := 0
	for _, k := range append(newKeys, old) {
		if _, err := d.UserByKeyHash(ctx, keys.Hash(k)); err == nil {
			live++
		}
	}
	if live != 1 {
		t.Errorf("%d keys authenticate after the race, want exactly 1", live)
	}
	if all, _ := d.ListUsers(ctx); len(all) != 2 {
		t.Errorf("ListUsers() has %d users after the race, want 2", len(all))
	}
}

func TestListUsers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	exp := t0.Add(7 * 24 * time.Hour)
	for _, n := range []string{"carol", "alice", "bob"} {
		var e *time.Time
		if n == "bob" {
			e = &exp
		}
		createUser(t, d, n, e)
	}
	alice, _ := d.UserByName(ctx, "alice")
	bob, _ := d.UserByName(ctx, "bob")
	batch := []aiproxy.Usage{
		{Time: t0.Add(time.Minute), UserID: alice.ID, UserName: "alice", Provider: "api.openai.com", Path: "/v1/chat/completions", Status: 200},
		{Time: t0.Add(3 * time.Minute), UserID: alice.ID, UserName: "alice", Provider: "api.openai.com", Path: "/v1/chat/completions", Status: 500},
		{Time: t0.Add(2 * time.Minute), UserID: alice.ID, UserName: "alice", Provider: "api.openai.com", Path: "/v1/models", Status: 200},
		{Time: t0.Add(time.Hour), UserID: bob.ID, UserName: "bob", Provider: "api.groq.com", Path: "/openai/v1/models", Status: 200},
	}
	if err := d.InsertUsage(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got, err := d.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name     string
		Expires  *time.Time
		LastUsed *time.Time
		Requests int64
	}
	var rows []row
	for _, u := range got {
		rows = append(rows, row{u.Name, u.ExpiresAt, u.LastUsedAt, u.Requests})
	}
	want := []row{
		{"alice", nil, ptr(t0.Add(3 * time.Minute)), 3},
		{"bob", &exp, ptr(t0.Add(time.Hour)), 1},
		{"carol", nil, nil, 0},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("ListUsers() mismatch (-want +got):\n%s", diff)
	}

	// An empty database lists an empty array, not null.
	empty, err := newTestStore(t).ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(empty); string(b) != "[]" {
		t.Errorf("ListUsers() on an empty db marshals to %s, want []", b)
	}
}

// TestCreateUser_NoInheritedUsage deletes the newest user and creates
// another: SQLite reuses the highest rowid, and the newcomer must not show
// the deleted user's requests.
func TestCreateUser_NoInheritedUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	createUser(t, d, "alice", nil)
	createUser(t, d, "bob", nil)
	bob, _ := d.UserByName(ctx, "bob")
	var batch []aiproxy.Usage
	for i := range 5 {
		tokens := int64(10)
		batch = append(batch, aiproxy.Usage{Time: t0.Add(time.Duration(i) * time.Second), UserID: bob.ID, UserName: "bob",
			Provider: "p", Path: "/v1/x", Status: 200, PromptTokens: &tokens, TotalTokens: &tokens})
	}
	if err := d.InsertUsage(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"carol", "dave"} {
		createUser(t, d, name, nil)
		u, _ := d.UserByName(ctx, name)
		if u.ID <= bob.ID {
			t.Errorf("new user %d id = %d, want above the deleted user's %d", i, u.ID, bob.ID)
		}
		totals, err := d.UserUsage(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(aiproxy.UsageTotals{}, totals); diff != "" {
			t.Errorf("UserUsage(%s) inherited usage (-want +got):\n%s", name, diff)
		}
	}
	users, _ := d.ListUsers(ctx)
	for _, u := range users {
		if u.Requests != 0 || u.LastUsedAt != nil {
			t.Errorf("ListUsers() %s has requests %d, last used %v; want none", u.Name, u.Requests, u.LastUsedAt)
		}
	}
	// The deleted user's records still count under its name.
	rows, err := d.Stats(ctx, aiproxy.StatsFilter{User: "bob"})
	if err != nil || len(rows) != 1 || rows[0].Requests != 5 {
		t.Errorf("Stats(user bob) = %+v, %v; want 5 requests kept", rows, err)
	}
}

// TestUsers_NoKeyMaterial checks that what the store returns for listings
// holds no key hash and no key.
func TestUsers_NoKeyMaterial(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	var secrets []string
	for i := range 3 {
		k := createUser(t, d, fmt.Sprintf("u%d", i), nil)
		secrets = append(secrets, k, keys.Hash(k), k[len(keys.Prefix):len(k)-4])
	}
	users, err := d.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(users)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b) + fmt.Sprintf("%+v", users)
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("ListUsers() output contains key material %q:\n%s", s, text)
		}
	}
}
