package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

func i64p(v int64) *int64 { return &v }

// TestUpdateLimits_OneTransactionThatAnotherHandleSeesAtItsNextLookup: a
// change bumps the counter serve reads on every request; a refused one
// changes nothing and bumps nothing.
func TestUpdateLimits_OneTransactionThatAnotherHandleSeesAtItsNextLookup(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := t.TempDir() + "/aiproxy.db"
	cli, serve := openTestStore(t, path), openTestStore(t, path)
	if err := cli.CreateUser(ctx, "alice", "h", "hint", t0, nil); err != nil {
		t.Fatal(err)
	}
	serve.UserByKeyHash(ctx, "x")
	v0, _ := serve.LimitsVersion(ctx)

	refused := errors.New("refused")
	err := cli.UpdateLimits(ctx, "alice", t0, func(cur *aiproxy.Limits) (*aiproxy.Limits, error) {
		return nil, refused
	})
	if !errors.Is(err, refused) {
		t.Fatalf("UpdateLimits(fn fails) error = %v, want fn's", err)
	}
	serve.UserByKeyHash(ctx, "x")
	if v, _ := serve.LimitsVersion(ctx); v != v0 {
		t.Errorf("a refused change moved the version from %d to %d", v0, v)
	}

	want := &aiproxy.Limits{RPM: i64p(60), Tokens: &aiproxy.TokenBudget{Limit: 1000, Period: aiproxy.PeriodWeek},
		Spend: &aiproxy.SpendBudget{LimitUSD: 2.5, Period: aiproxy.PeriodTotal}, Models: []string{"gpt-*"}}
	for _, name := range []string{"alice", store.DefaultsName} {
		err := cli.UpdateLimits(ctx, name, t0, func(cur *aiproxy.Limits) (*aiproxy.Limits, error) {
			if cur != nil {
				t.Errorf("%s: current limits %+v, want none", name, cur)
			}
			return want, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	serve.UserByKeyHash(ctx, "x")
	if v, _ := serve.LimitsVersion(ctx); v == v0 {
		t.Errorf("the version did not move after a change: %d", v)
	}
	own, defaults, err := serve.AllLimits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := serve.UserByName(ctx, "alice")
	if diff := cmp.Diff(map[int64]*aiproxy.Limits{alice.ID: want}, own); diff != "" {
		t.Errorf("own limits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, defaults); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if err := cli.UpdateLimits(ctx, "bob", t0, func(*aiproxy.Limits) (*aiproxy.Limits, error) { return want, nil }); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Errorf("UpdateLimits(missing user) error = %v, want ENOTFOUND", err)
	}
	if err := cli.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if own, _, _ := serve.AllLimits(ctx); len(own) != 0 {
		t.Errorf("a deleted user's limits stayed: %v", own)
	}
}

// TestChargedSince_ChargesWhatTheLimiterChargedElseTheUsage: errors are
// not usage, rows before since do not count.
func TestChargedSince_ChargesWhatTheLimiterChargedElseTheUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	cost := 0.001234
	rows := []aiproxy.Usage{
		{Time: t0, UserID: 1, UserName: "a", Status: 200, TotalTokens: i64p(100), CostUSD: &cost},
		{Time: t0, UserID: 1, UserName: "a", Status: 200, ChargedTokens: 4096, ChargedMicroUSD: 40960}, // usage unknown
		{Time: t0, UserID: 1, UserName: "a", Status: 429, TotalTokens: i64p(1000)},
		{Time: t0.Add(-time.Millisecond), UserID: 1, UserName: "a", Status: 200, TotalTokens: i64p(7)},
		{Time: t0, UserID: 2, UserName: "b", Status: 200, TotalTokens: i64p(5)},
	}
	if err := d.InsertUsage(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, err := d.ChargedSince(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]aiproxy.Charged{1: {Tokens: 4196, MicroUSD: 42194}, 2: {Tokens: 5}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ChargedSince (-want +got):\n%s", diff)
	}
	one, err := d.UserChargedSince(ctx, 2, t0)
	if err != nil || one != want[2] {
		t.Errorf("UserChargedSince(2) = %+v, %v; want %+v", one, err, want[2])
	}
}
