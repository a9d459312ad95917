package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

func fptr(v float64) *float64 { return &v }

func TestPrices_SetListDelete(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	ctx := t.Context()
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, p := range []aiproxy.Price{
		{Model: "openai/gpt-oss-120b", Input: 0.15, Output: 0.6, CachedInput: fptr(0.075)},
		{Model: "gpt-4o", Input: 1, Output: 2},
		{Model: "gpt-4o", Input: 2.5, Output: 10}, // replaces the one before
	} {
		if err := d.SetPrice(ctx, p, now); err != nil {
			t.Fatalf("SetPrice(%q) error = %v", p.Model, err)
		}
	}
	got, err := d.ListPrices(ctx)
	if err != nil {
		t.Fatalf("ListPrices() error = %v", err)
	}
	want := []aiproxy.Price{
		{Model: "gpt-4o", Input: 2.5, Output: 10},
		{Model: "openai/gpt-oss-120b", Input: 0.15, Output: 0.6, CachedInput: fptr(0.075)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListPrices() (-want +got):\n%s", diff)
	}

	if err := d.DeletePrice(ctx, "gpt-4o", nil); err != nil {
		t.Fatalf("DeletePrice(gpt-4o) error = %v", err)
	}
	if err := d.DeletePrice(ctx, "gpt-4o", nil); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Errorf("DeletePrice(gpt-4o) again error = %v, want ENOTFOUND", err)
	}
	got, _ = d.ListPrices(ctx)
	if diff := cmp.Diff(want[1:], got); diff != "" {
		t.Errorf("ListPrices() after delete (-want +got):\n%s", diff)
	}
}

// TestPrices_ChangeMovesAuthVersion: a price set through another handle on
// the same file (the CLI while serve runs) moves the counter that serve's
// next user lookup reads, and PricesVersion returns the new price with a
// version no older than that.
func TestPrices_ChangeMovesAuthVersion(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/aiproxy.db"
	serve := openTestStore(t, path)
	cli := openTestStore(t, path)
	ctx := t.Context()
	createUser(t, serve, "alice", nil)
	alice, err := serve.UserByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	lookup := func() {
		t.Helper()
		// What the proxy does first on every request; the key hash is
		// unknown, but the lookup reads the counter all the same.
		serve.UserByKeyHash(ctx, "no-such-hash")
	}
	lookup()
	before := serve.AuthVersion()
	if err := cli.InsertUsage(ctx, []aiproxy.Usage{{Time: time.Now(), UserID: alice.ID, UserName: "alice", Path: "/v1/x", Status: 200}}); err != nil {
		t.Fatal(err)
	}
	lookup()
	if got := serve.AuthVersion(); got != before {
		t.Errorf("AuthVersion() after a usage insert = %d, want %d (unchanged)", got, before)
	}
	if err := cli.SetPrice(ctx, aiproxy.Price{Model: "m", Input: 1, Output: 2}, time.Now()); err != nil {
		t.Fatal(err)
	}
	lookup()
	after := serve.AuthVersion()
	if after == before {
		t.Fatalf("AuthVersion() after SetPrice = %d, want it moved", after)
	}
	v, ps, err := serve.PricesVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v < after || len(ps) != 1 || ps[0].Model != "m" {
		t.Errorf("PricesVersion() = %d, %v; want version >= %d and the price of m", v, ps, after)
	}
	if err := cli.DeletePrice(ctx, "m", nil); err != nil {
		t.Fatal(err)
	}
	lookup()
	if got := serve.AuthVersion(); got == after {
		t.Errorf("AuthVersion() after DeletePrice = %d, want it moved", got)
	}
}

func TestMicroUSD(t *testing.T) {
	t.Parallel()
	tests := []struct {
		usd  float64
		want int64
	}{
		{0, 0},
		{0.0000004, 0},
		{0.0000005, 1}, // half rounds away from zero
		{0.000123456, 123},
		{1.25, 1_250_000},
		{0.1 + 0.2, 300_000}, // float noise does not leak into the stored figure
	}
	for _, tc := range tests {
		if got := store.MicroUSD(tc.usd); got != tc.want {
			t.Errorf("MicroUSD(%v) = %d, want %d", tc.usd, got, tc.want)
		}
	}
}

// TestUsageCost_StoredPerRowAndSummed: each record keeps the cost it was
// given when it was recorded, whatever prices are set later, and stats sum
// the costs of a group exactly (micro-dollars), null for a group with no
// priced record, and count unmetered records.
func TestUsageCost_StoredPerRowAndSummed(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	ctx := t.Context()
	createUser(t, d, "alice", nil)
	alice, _ := d.UserByName(ctx, "alice")
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rec := func(model string, cost *float64, unmetered bool) aiproxy.Usage {
		return aiproxy.Usage{Time: at, UserID: alice.ID, UserName: "alice", Provider: "api.openai.com", Model: model,
			Path: "/v1/chat/completions", Status: 200, CostUSD: cost, Unmetered: unmetered}
	}
	price := aiproxy.Price{Model: "gpt-4o", Input: 2.5, Output: 10, CachedInput: fptr(1.25)}
	first := price.Cost(1000, 200, 500) // 0.007250
	if err := d.InsertUsage(ctx, []aiproxy.Usage{
		rec("gpt-4o", &first, false),
		rec("gpt-4o", fptr(0.0000001), false), // rounds to 0, still priced
		rec("mystery", nil, false),
		rec("mystery", nil, true),
	}); err != nil {
		t.Fatal(err)
	}
	// A later price change does not touch what was recorded.
	if err := d.SetPrice(ctx, aiproxy.Price{Model: "gpt-4o", Input: 100, Output: 100}, at); err != nil {
		t.Fatal(err)
	}
	second := aiproxy.Price{Model: "gpt-4o", Input: 100, Output: 100}.Cost(10, 0, 10) // 0.002
	if err := d.InsertUsage(ctx, []aiproxy.Usage{rec("gpt-4o", &second, false)}); err != nil {
		t.Fatal(err)
	}

	got, err := d.Stats(ctx, aiproxy.StatsFilter{By: aiproxy.ByModel})
	if err != nil {
		t.Fatal(err)
	}
	want := []aiproxy.StatsRow{
		{Key: "gpt-4o", Requests: 3, CostUSD: fptr(0.00925)},
		{Key: "mystery", Requests: 2, Unmetered: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats(by model) (-want +got):\n%s", diff)
	}
	total, err := d.Stats(ctx, aiproxy.StatsFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]aiproxy.StatsRow{{Requests: 5, CostUSD: fptr(0.00925), Unmetered: 1}}, total); diff != "" {
		t.Errorf("Stats(totals) (-want +got):\n%s", diff)
	}
}
