package aiproxy_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func TestPeriod_CalendarUTCWeeksFromMonday(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 23, 30, 0, 0, time.FixedZone("X", -3600)) // Monday 00:30 UTC
	tests := []struct {
		p            aiproxy.Period
		start, reset time.Time
	}{
		{aiproxy.PeriodDay, time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)},
		{aiproxy.PeriodWeek, time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)},
		{aiproxy.PeriodMonth, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
		{aiproxy.PeriodTotal, time.Time{}, time.Time{}},
	}
	for _, tc := range tests {
		if got := tc.p.Start(at); !got.Equal(tc.start) {
			t.Errorf("%s.Start(%v) = %v, want %v", tc.p, at, got, tc.start)
		}
		if got := tc.p.Reset(at); !got.Equal(tc.reset) {
			t.Errorf("%s.Reset(%v) = %v, want %v", tc.p, at, got, tc.reset)
		}
	}
	sunday := time.Date(2026, 3, 8, 23, 59, 0, 0, time.UTC)
	if got := aiproxy.PeriodWeek.Start(sunday); !got.Equal(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("week of a Sunday starts %v, want the Monday before", got)
	}
}

func TestLimits_SetParsesTheFlagForms(t *testing.T) {
	t.Parallel()
	var l aiproxy.Limits
	for _, kv := range [][2]string{
		{"rpm", "60"}, {"tpm", "0"}, {"concurrent", "3"}, {"tokens", "100000/Day"},
		{"spend", "$0.50/week"}, {"models", " gpt-4o* ,o1,o1"},
	} {
		if err := l.Set(kv[0], kv[1]); err != nil {
			t.Fatalf("Set(%q, %q) error = %v", kv[0], kv[1], err)
		}
	}
	n := func(v int64) *int64 { return &v }
	want := aiproxy.Limits{RPM: n(60), TPM: n(0), Concurrent: n(3),
		Tokens: &aiproxy.TokenBudget{Limit: 100000, Period: aiproxy.PeriodDay},
		Spend:  &aiproxy.SpendBudget{LimitUSD: 0.5, Period: aiproxy.PeriodWeek},
		Models: []string{"gpt-4o*", "o1"}}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	for _, f := range aiproxy.LimitFields {
		if err := l.Set(f, "none"); err != nil {
			t.Errorf("Set(%q, none) error = %v", f, err)
		}
	}
	if !l.Empty() {
		t.Errorf("after none everywhere: %+v, want empty", l)
	}
	for _, bad := range [][2]string{{"rpm", "-1"}, {"rpm", "1e3"}, {"tokens", "5/fortnight"}, {"tokens", "5"},
		{"spend", "5$/month"}, {"spend", "NaN/day"}, {"spend", "0x10/day"}, {"models", ""}, {"models", "a b"}} {
		if err := l.Set(bad[0], bad[1]); aiproxy.ErrorCode(err) != aiproxy.EINVALID {
			t.Errorf("Set(%q, %q) error = %v, want EINVALID", bad[0], bad[1], err)
		}
	}
}

func TestMatchModel_StarIsTheOnlyWildcardAndCaseCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, model string
		want           bool
	}{
		{"gpt-4o", "gpt-4o", true},
		{"gpt-4o", "gpt-4o-mini", false},
		{"gpt-4o*", "gpt-4o-mini", true},
		{"*", "anything/at-all", true},
		{"*-mini", "gpt-4o-mini", true},
		{"g*4*i", "gpt-4o-mini", true},
		{"g*4*x", "gpt-4o-mini", false},
		{"GPT-4o*", "gpt-4o", false},
		{"gpt-4?", "gpt-4o", false}, // ? is itself
		{"[g]pt", "gpt", false},
		{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false},
	}
	for _, tc := range tests {
		if got := aiproxy.MatchModel(tc.pattern, tc.model); got != tc.want {
			t.Errorf("MatchModel(%q, %q) = %v, want %v", tc.pattern, tc.model, got, tc.want)
		}
	}
}
