package aiproxy

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Period is the span a token or spend budget covers (CONTRACT section 5):
// a calendar day, week (from Monday) or month in UTC, or the whole life of
// the user ("total", never reset).
type Period string

// The periods a budget may have.
const (
	PeriodDay   Period = "day"
	PeriodWeek  Period = "week"
	PeriodMonth Period = "month"
	PeriodTotal Period = "total"
)

// Start is the start of the period that holds t; the zero time for total.
func (p Period) Start(t time.Time) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	switch p {
	case PeriodDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case PeriodWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}

// Reset is when the period that holds t ends, and a new one starts; the
// zero time for total, which never resets.
func (p Period) Reset(t time.Time) time.Time {
	s := p.Start(t)
	switch p {
	case PeriodDay:
		return s.AddDate(0, 0, 1)
	case PeriodWeek:
		return s.AddDate(0, 0, 7)
	case PeriodMonth:
		return s.AddDate(0, 1, 0)
	}
	return time.Time{}
}

// TokenBudget is a quota of total tokens (prompt + completion) per period.
type TokenBudget struct {
	Limit  int64
	Period Period
}

// SpendBudget is a quota of US dollars per period.
type SpendBudget struct {
	LimitUSD float64
	Period   Period
}

// Limits are one user's limits, or the defaults (`*`) for users without
// their own. A nil field is a limit that is not set.
type Limits struct {
	RPM        *int64 // requests per sliding minute
	TPM        *int64 // total tokens per sliding minute
	Concurrent *int64 // requests in flight
	Tokens     *TokenBudget
	Spend      *SpendBudget
	Models     []string // patterns with * wildcards; nil: any model
}

// Empty reports whether no limit at all is set.
func (l *Limits) Empty() bool {
	return l == nil || (l.RPM == nil && l.TPM == nil && l.Concurrent == nil &&
		l.Tokens == nil && l.Spend == nil && l.Models == nil)
}

// LimitFields are the names of the limits, as CLI flags (--rpm) and as
// keys of the HTTP body, in the order listings show them.
var LimitFields = []string{"rpm", "tpm", "concurrent", "tokens", "spend", "models"}

// maxLimit bounds counts and token quotas; a larger number is a typo.
const maxLimit = 1 << 50

// Set changes one limit of l from its flag form: value "none" removes it;
// rpm, tpm, concurrent take a whole number; tokens N/PERIOD; spend
// USD/PERIOD (an optional leading $); models a comma-separated list of
// patterns. Errors are EINVALID and name the field; l is unchanged then.
func (l *Limits) Set(field, value string) error {
	v := strings.TrimSpace(value)
	none := v == "none"
	switch field {
	case "rpm", "tpm", "concurrent":
		var p *int64
		if !none {
			n, err := parseCount(field, v, v)
			if err != nil {
				return err
			}
			p = &n
		}
		switch field {
		case "rpm":
			l.RPM = p
		case "tpm":
			l.TPM = p
		default:
			l.Concurrent = p
		}
	case "tokens":
		if none {
			l.Tokens = nil
			return nil
		}
		num, per, err := splitPeriod(field, v, "N/PERIOD, such as 100000/day")
		if err != nil {
			return err
		}
		n, err := parseCount(field, num, v)
		if err != nil {
			return err
		}
		l.Tokens = &TokenBudget{Limit: n, Period: per}
	case "spend":
		if none {
			l.Spend = nil
			return nil
		}
		num, per, err := splitPeriod(field, v, "USD/PERIOD, such as 5/month")
		if err != nil {
			return err
		}
		usd, err := parseUSD(num, v)
		if err != nil {
			return err
		}
		l.Spend = &SpendBudget{LimitUSD: usd, Period: per}
	case "models":
		if none {
			l.Models = nil
			return nil
		}
		m, err := ParseModels(strings.Split(v, ","))
		if err != nil {
			return err
		}
		l.Models = m
	default:
		return Errorf(EINVALID, "unknown limit %q: want one of %s", field, strings.Join(LimitFields, ", "))
	}
	return nil
}

// ParseModels checks a list of model patterns: each is trimmed, none may be
// empty or hold spaces or control bytes, duplicates are dropped.
func ParseModels(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	seen := map[string]bool{}
	for _, m := range list {
		m = strings.TrimSpace(m)
		if m == "" {
			return nil, Errorf(EINVALID, "invalid models: an empty model name; want a comma-separated list such as gpt-4o*,claude-*, or none")
		}
		if len(m) > MaxModelLen {
			return nil, Errorf(EINVALID, "invalid models: a pattern is longer than %d characters", MaxModelLen)
		}
		for i := 0; i < len(m); i++ {
			if m[i] <= ' ' || m[i] == 0x7f {
				return nil, Errorf(EINVALID, "invalid models: %q holds a space or a control character", m)
			}
		}
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out, nil
}

// parseCount parses num, a part of the value v that messages quote.
func parseCount(field, num, v string) (int64, error) {
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case err == nil && n < 0:
		return 0, Errorf(EINVALID, "invalid %s %q: it is negative; want a whole number ≥ 0, or none", field, v)
	case err != nil || n > maxLimit:
		return 0, Errorf(EINVALID, "invalid %s %q: want a whole number ≥ 0, or none", field, v)
	}
	return n, nil
}

func parseUSD(num, v string) (float64, error) {
	num = strings.TrimPrefix(num, "$")
	f, err := strconv.ParseFloat(num, 64)
	switch {
	case err == nil && f < 0:
		return 0, Errorf(EINVALID, "invalid spend %q: it is negative; want US dollars per period, such as 5/month, or none", v)
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > 1e12 || strings.ContainsAny(num, "xXpP_") || strings.HasPrefix(num, "+"):
		return 0, Errorf(EINVALID, "invalid spend %q: want US dollars per period, such as 5/month or 0.50/day, or none", v)
	}
	return f, nil
}

// splitPeriod splits "N/PERIOD"; the period is required.
func splitPeriod(field, v, want string) (string, Period, error) {
	num, per, ok := strings.Cut(v, "/")
	if !ok {
		return "", "", Errorf(EINVALID, "invalid %s %q: the period is missing; want %s (day, week, month or total), or none", field, v, want)
	}
	p := Period(strings.ToLower(strings.TrimSpace(per)))
	switch p {
	case PeriodDay, PeriodWeek, PeriodMonth, PeriodTotal:
	default:
		return "", "", Errorf(EINVALID, "invalid %s %q: unknown period %q; want day, week, month or total", field, v, per)
	}
	return strings.TrimSpace(num), p, nil
}

// MatchModel reports whether model matches pattern, where * stands for any
// run of characters (also none) and everything else matches itself,
// case-sensitively.
func MatchModel(pattern, model string) bool {
	// Greedy match with backtracking to the last star: linear for one
	// star, and never worse than len(pattern)×len(model).
	p, m := 0, 0
	star, mark := -1, 0
	for m < len(model) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, m
			p++
		case p < len(pattern) && pattern[p] == model[m]:
			p++
			m++
		case star >= 0:
			p = star + 1
			mark++
			m = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// ModelAllowed reports whether l lets a user ask for model: any model when
// no allow-list is set, else one that matches a pattern.
func (l *Limits) ModelAllowed(model string) bool {
	if l == nil || l.Models == nil {
		return true
	}
	for _, p := range l.Models {
		if MatchModel(p, model) {
			return true
		}
	}
	return false
}

// Charged is what a user's requests were charged in some span: total
// tokens, and US dollars in whole micro-dollars (as usage.cost_micro_usd).
type Charged struct {
	Tokens   int64
	MicroUSD int64
}

// LimitsView is the JSON form of a user's limits in user rows and GET /me
// (CONTRACT section 5): a limit that is not set is null; Default is true
// when the user has no limits of their own and the defaults apply.
type LimitsView struct {
	RPM        *int64      `json:"rpm"`
	TPM        *int64      `json:"tpm"`
	Concurrent *int64      `json:"concurrent"`
	Tokens     *TokensView `json:"tokens"`
	Spend      *SpendView  `json:"spend"`
	Models     []string    `json:"models"`
	Default    bool        `json:"default"`
}

// TokensView is a token budget with what the current period used.
type TokensView struct {
	Limit    int64      `json:"limit"`
	Period   Period     `json:"period"`
	Used     int64      `json:"used"`
	ResetsAt *time.Time `json:"resets_at"` // nil for total
}

// SpendView is a spend budget with what the current period used.
type SpendView struct {
	LimitUSD float64    `json:"limit_usd"`
	Period   Period     `json:"period"`
	UsedUSD  float64    `json:"used_usd"`
	ResetsAt *time.Time `json:"resets_at"` // nil for total
}

// View is l as shown at now, with used(period start) giving what was
// charged since the start of each budget's current period.
func (l *Limits) View(now time.Time, isDefault bool, used func(since time.Time) Charged) LimitsView {
	v := LimitsView{Default: isDefault}
	if l == nil {
		return v
	}
	v.RPM, v.TPM, v.Concurrent = l.RPM, l.TPM, l.Concurrent
	if l.Models != nil {
		v.Models = append([]string{}, l.Models...)
	}
	if b := l.Tokens; b != nil {
		v.Tokens = &TokensView{Limit: b.Limit, Period: b.Period, Used: used(b.Period.Start(now)).Tokens,
			ResetsAt: resetsAt(b.Period, now)}
	}
	if b := l.Spend; b != nil {
		v.Spend = &SpendView{LimitUSD: b.LimitUSD, Period: b.Period, UsedUSD: float64(used(b.Period.Start(now)).MicroUSD) / 1e6,
			ResetsAt: resetsAt(b.Period, now)}
	}
	return v
}

func resetsAt(p Period, now time.Time) *time.Time {
	if p == PeriodTotal {
		return nil
	}
	t := p.Reset(now)
	return &t
}

// LimitState is what a store shared by several serve processes holds of one
// limited user's counters (CONTRACT section 8), read under the user's lock
// before a reservation.
type LimitState struct {
	// Window is the requests and tokens counted in each of the last 60
	// seconds (for --rpm and --tpm), oldest first.
	Window []WindowCount
	// Inflight is the requests reserved and not yet settled or released.
	Inflight int64
	// Tokens and Spend are the token and spend budgets' counters in the
	// periods the reservation asked for.
	Tokens, Spend BudgetUse
}

// WindowCount is what one second of a sliding window counted.
type WindowCount struct {
	Sec      int64 // Unix seconds
	Requests int64
	Tokens   int64
}

// BudgetUse is one budget's counters in its current period: what settled
// requests were charged, and what requests in flight hold.
type BudgetUse struct {
	Used     int64
	Reserved int64
}

// Hold is one reservation as a shared store keeps it until it is settled
// or released.
type Hold struct {
	Sec      int64 // the second it was taken (Unix), for the windows
	Tokens   int64 // total tokens reserved
	MicroUSD int64 // micro-dollars reserved
	// TokensStart and SpendStart are the starts of the budget periods it
	// counts against; nil for a budget that is not set.
	TokensStart, SpendStart *time.Time
}
