package store_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/audit"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// TestCopyTo_CopiesEverythingIntoAnEmptyPostgres: a SQLite database with
// users (one deleted), a provider key, a limit, a price, usage and an audit
// record, copied into PostgreSQL, reads back the same through the store
// API under the target's own secret; ids are kept and the next user's id is
// past every id SQLite gave; a second copy into the now non-empty target is
// refused and changes nothing.
func TestCopyTo_CopiesEverythingIntoAnEmptyPostgres(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src := openTestStore(t, filepath.Join(t.TempDir(), "aiproxy.db")) // its key file beside it
	dst := openTestStore(t, pgtest.NewDatabase(t), pgSecret())

	actx, _ := audit.Begin(ctx, "user add", "bob", t0)
	aliceKey := createUser(t, src, "alice", nil)
	if err := src.CreateUser(actx, "bob", keys.Hash("bob-key"), keys.Hint("bob-key"), t0, nil); err != nil {
		t.Fatal(err)
	}
	createUser(t, src, "gone", nil) // the highest id, deleted: never given again
	if err := src.DeleteUser(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := addKey(t, src, "api.openai.com", "https://api.openai.com", "sk-provider-secret"); err != nil {
		t.Fatal(err)
	}
	rpm := int64(7)
	if err := src.UpdateLimits(ctx, "alice", t0, func(*aiproxy.Limits) (*aiproxy.Limits, error) {
		return &aiproxy.Limits{RPM: &rpm}, nil
	}); err != nil {
		t.Fatal(err)
	}
	cached := 0.25
	if err := src.SetPrice(ctx, aiproxy.Price{Model: "gpt-x", Input: 1, Output: 2.5, CachedInput: &cached}, t0); err != nil {
		t.Fatal(err)
	}
	alice, err := src.UserByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok, cost := int64(30), 0.5
	if err := src.InsertUsage(ctx, []aiproxy.Usage{
		{Time: t0, UserID: alice.ID, UserName: "alice", Provider: "api.openai.com", Model: "gpt-x", Path: "/v1/chat/completions",
			Status: 200, TotalTokens: &tok, Duration: time.Second, CostUSD: &cost},
		{Time: t0.Add(time.Minute), UserID: alice.ID, UserName: "alice", Provider: "api.openai.com", Model: "gpt-x",
			Path: "/v1/chat/completions", Status: 500, Duration: time.Second},
	}); err != nil {
		t.Fatal(err)
	}

	copied, err := src.CopyTo(ctx, dst)
	if err != nil {
		t.Fatalf("CopyTo error = %v", err)
	}
	rows := map[string]int64{}
	for _, c := range copied {
		rows[c.Table] = c.Rows
	}
	for table, want := range map[string]int64{"users": 2, "providers": 1, "provider_keys": 1, "limits": 1, "prices": 1,
		"usage": 2, "usage_rollup": 1, "audit_log": 1} {
		if rows[table] != want {
			t.Errorf("copied %d rows of %s, want %d (all: %v)", rows[table], table, want, copied)
		}
	}

	// Users, with their key hashes and ids.
	srcUsers, _ := src.ListUsers(ctx)
	dstUsers, err := dst.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(srcUsers, dstUsers); diff != "" {
		t.Errorf("users differ (-sqlite +postgres):\n%s", diff)
	}
	if u, err := dst.UserByKeyHash(ctx, keys.Hash(aliceKey)); err != nil || u.ID != alice.ID {
		t.Errorf("UserByKeyHash(alice's key) on the target = %+v, %v; want id %d", u, err, alice.ID)
	}
	// The provider key, opened under the target's secret.
	set, err := dst.ProviderSet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, ok, err := set.Find("api.openai.com")
	if err != nil || !ok || len(p.Keys) != 1 || p.Keys[0] != "sk-provider-secret" {
		t.Errorf("provider on the target = %+v, %v, %v; want its key re-sealed and opening", p, ok, err)
	}
	// Limits, prices, usage and its daily totals, the audit log.
	own, _, err := dst.AllLimits(ctx)
	if err != nil || own[alice.ID] == nil || own[alice.ID].RPM == nil || *own[alice.ID].RPM != 7 {
		t.Errorf("limits on the target = %v, %v; want alice's rpm 7", own, err)
	}
	srcPrices, _ := src.ListPrices(ctx)
	dstPrices, err := dst.ListPrices(ctx)
	if diff := cmp.Diff(srcPrices, dstPrices); err != nil || diff != "" {
		t.Errorf("prices differ (-sqlite +postgres), err %v:\n%s", err, diff)
	}
	for _, f := range []aiproxy.StatsFilter{{}, {By: aiproxy.ByDay}, {Since: t0, By: aiproxy.ByUser}} {
		want, _ := src.Stats(ctx, f)
		got, err := dst.Stats(ctx, f)
		if diff := cmp.Diff(want, got); err != nil || diff != "" {
			t.Errorf("Stats(%+v) differs (-sqlite +postgres), err %v:\n%s", f, err, diff)
		}
	}
	charged, err := dst.UserChargedSince(ctx, alice.ID, t0.Add(-time.Hour))
	if want, _ := src.UserChargedSince(ctx, alice.ID, t0.Add(-time.Hour)); err != nil || charged != want {
		t.Errorf("UserChargedSince on the target = %+v, %v; want %+v (the daily totals not counted twice)", charged, err, want)
	}
	srcAudit, _ := src.AuditLog(ctx, time.Time{})
	dstAudit, err := dst.AuditLog(ctx, time.Time{})
	if diff := cmp.Diff(srcAudit, dstAudit); err != nil || len(srcAudit) == 0 || diff != "" {
		t.Errorf("audit log differs (-sqlite +postgres), err %v:\n%s", err, diff)
	}
	// The sequences go on past every id SQLite gave, the deleted user's too.
	if err := dst.CreateUser(ctx, "carol", keys.Hash("carol-key"), "hint", t0, nil); err != nil {
		t.Fatal(err)
	}
	carol, _ := dst.UserByName(ctx, "carol")
	for _, u := range srcUsers {
		if carol.ID <= u.ID {
			t.Errorf("new user's id %d is not past copied id %d", carol.ID, u.ID)
		}
	}
	if carol.ID != 4 {
		t.Errorf("new user's id = %d, want 4 (past the deleted user's 3)", carol.ID)
	}

	// Once more into the now non-empty target: refused, nothing changed.
	_, err = src.CopyTo(ctx, dst)
	if aiproxy.ErrorCode(err) != aiproxy.ECONFLICT || !strings.Contains(err.Error(), "not empty") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("second CopyTo error = %v, want one line ECONFLICT saying the target is not empty", err)
	}
	if users, _ := dst.ListUsers(ctx); len(users) != 3 {
		t.Errorf("after the refused copy the target has %d users, want 3", len(users))
	}
}
