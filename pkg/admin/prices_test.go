package admin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func f64(v float64) *float64 { return &v }

// priceOf returns the row of model in the service's list.
func priceOf(t *testing.T, f fixture, model string) (aiproxy.Price, bool) {
	t.Helper()
	ps, err := f.svc.ListPrices(t.Context())
	if err != nil {
		t.Fatalf("ListPrices() error = %v", err)
	}
	for _, p := range ps {
		if p.Model == model {
			return p, true
		}
	}
	return aiproxy.Price{}, false
}

func TestService_SetPrice(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := t.Context()
	got, err := f.svc.SetPrice(ctx, admin.PriceInput{Model: "openai/gpt-oss-120b", Input: f64(0.15), Output: f64(0.6), CachedInput: f64(0.075)})
	if err != nil {
		t.Fatalf("SetPrice() error = %v", err)
	}
	want := aiproxy.Price{Model: "openai/gpt-oss-120b", Input: 0.15, Output: 0.6, CachedInput: f64(0.075)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SetPrice() (-want +got):\n%s", diff)
	}
	if p, ok := priceOf(t, f, "openai/gpt-oss-120b"); !ok || p.BuiltIn || p.Input != 0.15 {
		t.Errorf("listed %+v, %v; want the price set, not built-in", p, ok)
	}
}

// TestService_SetPrice_badInputChangesNothing: each bad value is refused
// with EINVALID and a message naming the field, and nothing is stored.
func TestService_SetPrice_badInputChangesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   admin.PriceInput
		want string // in the message
	}{
		{"negative input", admin.PriceInput{Model: "m", Input: f64(-1), Output: f64(1)}, "input"},
		{"negative output", admin.PriceInput{Model: "m", Input: f64(1), Output: f64(-0.01)}, "output"},
		{"negative cached input", admin.PriceInput{Model: "m", Input: f64(1), Output: f64(1), CachedInput: f64(-1)}, "cached input"},
		{"too large", admin.PriceInput{Model: "m", Input: f64(2e6), Output: f64(1)}, "input"},
		{"missing input", admin.PriceInput{Model: "m", Output: f64(1)}, "input"},
		{"missing output", admin.PriceInput{Model: "m", Input: f64(1)}, "output"},
		{"empty model", admin.PriceInput{Input: f64(1), Output: f64(1)}, "model"},
		{"model with a space", admin.PriceInput{Model: "gpt 4o", Input: f64(1), Output: f64(1)}, "model"},
		{"model with a newline", admin.PriceInput{Model: "gpt\n4o", Input: f64(1), Output: f64(1)}, "model"},
		{"model too long", admin.PriceInput{Model: strings.Repeat("m", aiproxy.MaxModelLen+1), Input: f64(1), Output: f64(1)}, "model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newService(t)
			_, err := f.svc.SetPrice(t.Context(), tc.in)
			if aiproxy.ErrorCode(err) != aiproxy.EINVALID || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetPrice(%+v) error = %v, want EINVALID naming %q", tc.in, err, tc.want)
			}
			stored, err := f.db.ListPrices(t.Context())
			if err != nil || len(stored) != 0 {
				t.Errorf("stored prices after a refused SetPrice = %v, %v; want none", stored, err)
			}
		})
	}
}

func TestParsePrice(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"2.50", "0", " 10 ", "1e-3"} {
		if _, err := admin.ParsePrice("input", s); err != nil {
			t.Errorf("ParsePrice(%q) error = %v", s, err)
		}
	}
	for _, s := range []string{"", "abc", "$2", "-1", "NaN", "Inf", "2,50"} {
		if _, err := admin.ParsePrice("output", s); aiproxy.ErrorCode(err) != aiproxy.EINVALID || !strings.Contains(err.Error(), "output") {
			t.Errorf("ParsePrice(%q) error = %v, want EINVALID naming output", s, err)
		}
	}
}

// TestService_RemovePrice: removing an override restores the built-in
// price; a built-in price alone cannot be removed; an unknown model is not
// found.
func TestService_RemovePrice(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := t.Context()
	if _, err := f.svc.SetPrice(ctx, admin.PriceInput{Model: "gpt-4o", Input: f64(1), Output: f64(2)}); err != nil {
		t.Fatal(err)
	}
	if p, _ := priceOf(t, f, "gpt-4o"); p.BuiltIn || p.Input != 1 {
		t.Fatalf("gpt-4o after SetPrice = %+v, want the override", p)
	}
	if err := f.svc.RemovePrice(ctx, "gpt-4o"); err != nil {
		t.Fatalf("RemovePrice(gpt-4o) error = %v", err)
	}
	if p, _ := priceOf(t, f, "gpt-4o"); !p.BuiltIn || p.Input != 2.5 {
		t.Errorf("gpt-4o after RemovePrice = %+v, want the built-in price again", p)
	}
	if err := f.svc.RemovePrice(ctx, "gpt-4o"); aiproxy.ErrorCode(err) != aiproxy.ECONFLICT {
		t.Errorf("RemovePrice(gpt-4o) of a built-in price error = %v, want ECONFLICT", err)
	}
	if err := f.svc.RemovePrice(ctx, "no-such-model"); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Errorf("RemovePrice(no-such-model) error = %v, want ENOTFOUND", err)
	}
	if _, ok := priceOf(t, f, "gpt-4o"); !ok {
		t.Errorf("gpt-4o is no longer listed")
	}
}

// TestService_PriceChangesAreAudited: price set and remove are written to
// the audit log, refusals included.
func TestService_PriceChangesAreAudited(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := t.Context()
	f.svc.SetPrice(ctx, admin.PriceInput{Model: "openai/gpt-oss-120b", Input: f64(1), Output: f64(2)})
	f.svc.SetPrice(ctx, admin.PriceInput{Model: "m", Input: f64(-1), Output: f64(2)})
	f.svc.RemovePrice(ctx, "openai/gpt-oss-120b")
	f.svc.RemovePrice(ctx, "gpt-4o")
	recs, err := f.db.AuditLog(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Action+" "+r.Target+" "+r.Result)
	}
	want := []string{
		"price.set openai/gpt-oss-120b ok",
		"price.set m refused: invalid",
		"price.remove openai/gpt-oss-120b ok",
		"price.remove gpt-4o refused: conflict",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit log (-want +got):\n%s", diff)
	}
}
