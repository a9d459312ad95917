// Package limits enforces per-user limits and budgets in serve (CONTRACT
// section 5). On SQLite the counters are kept in memory, so that a check
// reads no database on the request path and costs microseconds.
//
// Before forwarding, the proxy reserves the most a request can cost
// (Reserve); when the request ends it settles the reservation with the
// upstream's usage (Settle), or gives it all back when aiproxy refused the
// request or the upstream answered with an error status (Release). A
// reservation that does not fit is refused, so concurrent requests that
// each name their maximum can never overspend a budget.
//
// The counters are rebuilt from the database when the Limiter is made
// (Source: the limits, and what each user was charged in the current
// periods, which the usage rows record), so limits and what was used
// survive a restart; and they follow limits changed by another process at
// the next request (Source.LimitsVersion).
//
// The reservation itself is one function, reserve, under one user's lock:
// check every limit, then take from every counter. With several serve
// processes on one PostgreSQL database (CONTRACT section 8) the counters
// live in the database instead (a Ledger, store.Ledger): each reservation
// reads the user's counters under the user's lock there, runs the same
// reserve on them, and stores what it took, so that the limits hold across
// every instance together; serve on SQLite keeps them in memory.
package limits

import (
	"context"
	"errors"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// Source is where the limiter's state comes from and survives restarts:
// *store.DB implements it.
type Source interface {
	// LimitsVersion is a number that changes whenever limits may have
	// changed, cheap enough to read on every request.
	LimitsVersion(ctx context.Context) (int64, error)
	// AllLimits returns every user's own limits by user id, and the
	// defaults (nil: none).
	AllLimits(ctx context.Context) (own map[int64]*aiproxy.Limits, defaults *aiproxy.Limits, err error)
	// ChargedSince returns, per user id, what the user's requests at or
	// after since were charged against their budgets.
	ChargedSince(ctx context.Context, since time.Time) (map[int64]aiproxy.Charged, error)
}

// Ledger keeps limited users' counters in a database that several serve
// processes share (PostgreSQL: *store.Ledger). With one, the limiter keeps
// no counters of its own: each reservation reads the user's counters under
// the user's lock in the database, runs the same check as in memory, and
// stores its hold there.
type Ledger interface {
	// Reserve calls take with user userID's counters at now, for the token
	// and spend budget periods starting at tokensStart and spendStart (nil:
	// not set), under the user's lock, and stores take's hold when it
	// returns ok.
	Reserve(ctx context.Context, userID int64, now time.Time, tokensStart, spendStart *time.Time,
		take func(aiproxy.LimitState) (aiproxy.Hold, bool)) (id int64, err error)
	// Settle marks hold id settled with what its request was charged;
	// with window it is still counted in the 60 s window of --rpm and
	// --tpm.
	Settle(ctx context.Context, id int64, charged aiproxy.Charged, window bool) error
	// Release gives back everything hold id reserved.
	Release(ctx context.Context, id int64) error
}

// reserveTimeout bounds a reservation in the Ledger, and settleTimeout a
// settlement or release: those run as the request ends, before its
// handler returns, so a database that went away must not hold every
// answer in flight for long; the ledger retries one that failed.
const (
	reserveTimeout = 5 * time.Second
	settleTimeout  = 2 * time.Second
)

// DefaultReserve is the number of output tokens reserved for a request
// that names no maximum (serve --default-reserve).
const DefaultReserve = 4096

// window is the span of --rpm and --tpm.
const window = 60 * time.Second

// Option configures New.
type Option func(*Limiter)

// WithDefaultReserve sets the output tokens reserved for a request that
// names no maximum (default DefaultReserve).
func WithDefaultReserve(n int64) Option {
	return func(l *Limiter) {
		if n > 0 {
			l.defaultReserve = n
		}
	}
}

// WithLedger keeps the counters in a shared database instead of memory
// (serve on PostgreSQL). A nil ledger keeps them in memory.
func WithLedger(ld Ledger) Option {
	return func(l *Limiter) { l.ledger = ld }
}

// Limiter holds every limited user's counters.
type Limiter struct {
	src            Source
	ledger         Ledger // nil: counters in memory
	now            func() time.Time
	defaultReserve int64

	userLocks [64]sync.Mutex // with a ledger: one reservation per user at a time (by id modulo 64)

	reloadMu sync.Mutex   // one reload at a time
	retryAt  atomic.Int64 // after a failed reload: no other before this (Unix ns)

	mu       sync.RWMutex
	version  int64
	own      map[int64]*aiproxy.Limits
	defaults *aiproxy.Limits
	// seeds hold, per period, what each user had been charged in the
	// period current at the last load: the start of the counters of a
	// user seen for the first time since. A user without counters has
	// made no request since (any request of a limited user makes them),
	// so the seeds stay exact until limits change.
	seeds map[aiproxy.Period]seed
	users map[int64]*user
}

type seed struct {
	start time.Time
	used  map[int64]aiproxy.Charged
}

// New returns a Limiter whose counters are rebuilt from src; now is the
// clock (time.Now in serve).
func New(ctx context.Context, src Source, now func() time.Time, opts ...Option) (*Limiter, error) {
	l := &Limiter{src: src, now: now, defaultReserve: DefaultReserve, users: map[int64]*user{}, version: -1}
	for _, o := range opts {
		o(l)
	}
	v, err := src.LimitsVersion(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.reload(ctx, v); err != nil {
		return nil, err
	}
	return l, nil
}

// Request is what Reserve needs to know of one proxied request.
type Request struct {
	UserID int64
	// Model is the model as the user named it ("" for a request that names
	// none, such as GET /v1/models: unless Metered, it counts towards
	// --rpm and --concurrent only).
	Model string
	// Metered says the request can spend tokens even though it names no
	// model (a JSON POST: a server whose model is optional, a batch): it is
	// reserved the default and charged like any other, so that leaving
	// "model" out is no way around a budget.
	Metered bool
	// PromptTokens is the prompt's size estimated from the body.
	PromptTokens int64
	// MaxOutputTokens is max_tokens, max_completion_tokens or
	// max_output_tokens; 0 when the request names none: the default
	// reserve is taken.
	MaxOutputTokens int64
	// Price is the model's price (for the model name sent upstream); nil
	// for an unpriced model.
	Price *aiproxy.Price
}

// Reserve checks req against its user's limits and, when it fits, takes
// the most it can cost from every counter. It returns nil, nil, without
// allocating, for a user without limits. Refusals are *Refusal errors:
// EMODEL (model not allowed), ENOTPRICED (a spend limit and an unpriced
// model), EQUOTA (a token or spend budget, until its period resets) and
// ELIMIT (--rpm, --tpm, --concurrent); any other error is internal.
func (l *Limiter) Reserve(req Request) (*Reservation, error) {
	if l.ledger != nil {
		return l.reserveShared(req)
	}
	u, err := l.user(req.UserID)
	if u == nil || err != nil {
		return nil, err
	}
	return u.reserve(l, req, l.now())
}

// ModelAllowed reports whether the user may ask for model (to filter
// /v1/models): true for a user without an allow-list.
func (l *Limiter) ModelAllowed(userID int64, model string) bool {
	if err := l.sync(); err != nil {
		return false
	}
	l.mu.RLock()
	lim := l.limitsOf(userID)
	l.mu.RUnlock()
	return lim.ModelAllowed(model)
}

// sync reloads the limits if they changed since the last load.
func (l *Limiter) sync() error {
	ctx := context.Background()
	v, err := l.src.LimitsVersion(ctx)
	if err != nil {
		return err
	}
	l.mu.RLock()
	cur := l.version
	l.mu.RUnlock()
	if v == cur {
		return nil
	}
	if cur >= 0 && l.now().UnixNano() < l.retryAt.Load() {
		return nil // the last reload failed: the limits in force hold a while
	}
	ctx, cancel := context.WithTimeout(ctx, reserveTimeout)
	defer cancel()
	if err := l.reload(ctx, v); err != nil {
		if cur < 0 {
			return err
		}
		// The database went away just after a change: keep enforcing the
		// limits loaded last rather than refuse every request, and try
		// again in a second.
		l.retryAt.Store(l.now().Add(time.Second).UnixNano())
	}
	return nil
}

// user returns the counters of user id, made on first use; nil for a user
// without limits.
func (l *Limiter) user(id int64) (*user, error) {
	if err := l.sync(); err != nil {
		return nil, err
	}
	l.mu.RLock()
	u := l.users[id]
	var lim *aiproxy.Limits
	if u == nil {
		lim = l.limitsOf(id)
	}
	l.mu.RUnlock()
	if u != nil || lim.Empty() {
		return u, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if u = l.users[id]; u == nil {
		// Limits may have changed since the read lock: take them again.
		u = &user{}
		u.apply(id, l.limitsOf(id), l.now(), l.seeds)
		l.users[id] = u
	}
	return u, nil
}

// limitsOf is user id's limits: their own, else the defaults. The caller
// holds l.mu.
func (l *Limiter) limitsOf(id int64) *aiproxy.Limits {
	if lim, ok := l.own[id]; ok {
		return lim
	}
	return l.defaults
}

// reload loads the limits at version v. When they changed, what each user
// was charged in the periods in use is read again, for counters whose
// budget is new; counters whose budget kept its period keep what they
// counted, which is newer than the database (usage rows are written
// asynchronously).
func (l *Limiter) reload(ctx context.Context, v int64) error {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	l.mu.RLock()
	cur, curOwn, curDefaults := l.version, l.own, l.defaults
	l.mu.RUnlock()
	if cur == v {
		return nil // another request reloaded meanwhile
	}
	own, defaults, err := l.src.AllLimits(ctx)
	if err != nil {
		return err
	}
	if cur >= 0 && reflect.DeepEqual(own, curOwn) && reflect.DeepEqual(defaults, curDefaults) {
		// Users, providers or prices changed, not limits.
		l.mu.Lock()
		l.version = v
		l.mu.Unlock()
		return nil
	}
	now := l.now()
	seeds := map[aiproxy.Period]seed{}
	need := func(lim *aiproxy.Limits) error {
		if lim == nil {
			return nil
		}
		for _, p := range []aiproxy.Period{tokensPeriod(lim.Tokens), spendPeriod(lim.Spend)} {
			if p == "" {
				continue
			}
			if _, ok := seeds[p]; ok {
				continue
			}
			start := p.Start(now)
			used, err := l.src.ChargedSince(ctx, start)
			if err != nil {
				return err
			}
			seeds[p] = seed{start: start, used: used}
		}
		return nil
	}
	if l.ledger == nil { // a ledger keeps what was used itself
		if err := need(defaults); err != nil {
			return err
		}
		for _, lim := range own {
			if err := need(lim); err != nil {
				return err
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.version, l.own, l.defaults, l.seeds = v, own, defaults, seeds
	for id, u := range l.users {
		u.mu.Lock()
		u.apply(id, l.limitsOf(id), now, seeds)
		u.mu.Unlock()
	}
	return nil
}

func tokensPeriod(b *aiproxy.TokenBudget) aiproxy.Period {
	if b == nil {
		return ""
	}
	return b.Period
}

func spendPeriod(b *aiproxy.SpendBudget) aiproxy.Period {
	if b == nil {
		return ""
	}
	return b.Period
}

// user is one limited user's counters.
type user struct {
	mu       sync.Mutex
	lim      *aiproxy.Limits
	inflight int64
	reqs     slidingWindow // requests, for --rpm
	toks     slidingWindow // reserved then settled tokens, for --tpm
	tokens   budget        // total tokens
	spend    budget        // micro-dollars
}

// apply sets u's limits, keeping the counters of budgets whose period did
// not change. The caller holds u.mu, or owns u alone.
func (u *user) apply(id int64, lim *aiproxy.Limits, now time.Time, seeds map[aiproxy.Period]seed) {
	u.lim = lim
	var tok, usd *budgetSpec
	if lim != nil && lim.Tokens != nil {
		tok = &budgetSpec{limit: lim.Tokens.Limit, period: lim.Tokens.Period}
	}
	if lim != nil && lim.Spend != nil {
		usd = &budgetSpec{limit: microUSD(lim.Spend.LimitUSD), period: lim.Spend.Period}
	}
	u.tokens.configure(tok, now, func(p aiproxy.Period, start time.Time) int64 { return seedOf(seeds, p, start, id).Tokens })
	u.spend.configure(usd, now, func(p aiproxy.Period, start time.Time) int64 { return seedOf(seeds, p, start, id).MicroUSD })
}

// seedOf is what user id was charged in the period of p starting at start.
// A period that started after the seeds were read holds nothing yet.
func seedOf(seeds map[aiproxy.Period]seed, p aiproxy.Period, start time.Time, id int64) aiproxy.Charged {
	if s, ok := seeds[p]; ok && s.start.Equal(start) {
		return s.used[id]
	}
	return aiproxy.Charged{}
}

type budgetSpec struct {
	limit  int64
	period aiproxy.Period
}

// budget is a quota per period: what was charged in the current period,
// and what requests in flight hold.
type budget struct {
	on       bool
	limit    int64
	period   aiproxy.Period
	start    time.Time
	reset    time.Time // zero for total
	used     int64
	reserved int64
	// epoch changes whenever the counters start afresh (a new period, a
	// new budget), so that a reservation taken before gives back nothing.
	epoch uint64
}

func (b *budget) configure(s *budgetSpec, now time.Time, seed func(aiproxy.Period, time.Time) int64) {
	switch {
	case s == nil:
		b.on = false
		b.epoch++
	case b.on && b.period == s.period:
		b.limit = s.limit // same period: keep what was counted
	default:
		start := s.period.Start(now)
		*b = budget{on: true, limit: s.limit, period: s.period, start: start, reset: s.period.Reset(now),
			used: seed(s.period, start), epoch: b.epoch + 1}
	}
}

// roll starts a new period when the current one has ended.
func (b *budget) roll(now time.Time) {
	if b.on && !b.reset.IsZero() && !now.Before(b.reset) {
		b.start, b.reset = b.period.Start(now), b.period.Reset(now)
		b.used, b.reserved = 0, 0
		b.epoch++
	}
}

func (b *budget) fits(need int64) bool {
	return !b.on || b.used+b.reserved+need <= b.limit
}

func (b *budget) left() int64 { return max(b.limit-b.used-b.reserved, 0) }

// slidingWindow counts over the last 60 seconds in one-second slots: a
// count made at second s leaves the window at second s+60.
type slidingWindow struct {
	sec [60]int64
	n   [60]int64
}

func (w *slidingWindow) sum(now int64) int64 {
	var s int64
	for i := range w.sec {
		if w.sec[i] > now-60 && w.sec[i] <= now {
			s += w.n[i]
		}
	}
	return s
}

func (w *slidingWindow) add(sec, d int64) {
	i := slot(sec)
	if w.sec[i] != sec {
		w.sec[i], w.n[i] = sec, 0
	}
	w.n[i] += d
}

// adjust changes the count made at second sec, if it is still kept.
func (w *slidingWindow) adjust(sec, d int64) {
	if i := slot(sec); w.sec[i] == sec {
		w.n[i] += d
	}
}

// wait is how long until need more fits under limit: 0 now; the whole
// window when need alone is over limit.
func (w *slidingWindow) wait(now time.Time, need, limit int64) time.Duration {
	sec := now.Unix()
	s := w.sum(sec)
	if s+need <= limit {
		return 0
	}
	if need > limit {
		return window
	}
	for t := sec - 59; t <= sec; t++ {
		if i := slot(t); w.sec[i] == t {
			s -= w.n[i]
		}
		if s+need <= limit {
			return time.Unix(t+60, 0).Sub(now)
		}
	}
	return window
}

// resetIn is how long until the oldest count leaves the window, and what
// remains grows again: with nothing left, what Retry-After says.
func (w *slidingWindow) resetIn(now time.Time) time.Duration {
	sec := now.Unix()
	for t := sec - 59; t <= sec; t++ {
		if i := slot(t); w.sec[i] == t && w.n[i] > 0 {
			return time.Unix(t+60, 0).Sub(now)
		}
	}
	return 0
}

func slot(sec int64) int {
	i := sec % 60
	if i < 0 {
		i += 60
	}
	return int(i)
}

func microUSD(usd float64) int64 { return int64(math.Round(usd * 1e6)) }

// reserve is Reserve for u: every check first, then every counter.
func (u *user) reserve(l *Limiter, req Request, now time.Time) (*Reservation, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	lim := u.lim
	if lim.Empty() {
		return nil, nil
	}
	metered := req.Metered || req.Model != ""
	if metered && !lim.ModelAllowed(req.Model) {
		if req.Model == "" {
			return nil, &Refusal{err: aiproxy.Errorf(aiproxy.EMODEL, "this key may use only some models: name one in the request's \"model\"")}
		}
		return nil, &Refusal{err: aiproxy.Errorf(aiproxy.EMODEL, "model %q is not allowed for this key", req.Model)}
	}
	var needTok, needUSD int64
	if metered {
		out := req.MaxOutputTokens
		if out <= 0 {
			out = l.defaultReserve
		}
		prompt := max(req.PromptTokens, 0)
		needTok = prompt + out
		if req.Price != nil {
			needUSD = microUSD(req.Price.Cost(prompt, 0, out))
		} else if lim.Spend != nil && req.Model == "" {
			return nil, &Refusal{err: aiproxy.Errorf(aiproxy.ENOTPRICED,
				"this key has a spend limit and the request names no model, so it cannot be priced: name a priced model (aiproxy price set MODEL --input USD --output USD)")}
		} else if lim.Spend != nil {
			return nil, &Refusal{err: aiproxy.Errorf(aiproxy.ENOTPRICED,
				"model %q has no price and this key has a spend limit: the admin can price it with aiproxy price set %s --input USD --output USD",
				req.Model, req.Model)}
		}
	}
	u.tokens.roll(now)
	u.spend.roll(now)
	if metered {
		if !u.tokens.fits(needTok) {
			return nil, u.quota(now, u.headers(now, lim), "token", needTok, func(n int64) string { return strconv.FormatInt(n, 10) + " tokens" }, &u.tokens)
		}
		if !u.spend.fits(needUSD) {
			return nil, u.quota(now, u.headers(now, lim), "spend", needUSD, formatUSD, &u.spend)
		}
	}
	if lim.Concurrent != nil && u.inflight >= *lim.Concurrent {
		return nil, &Refusal{err: aiproxy.Errorf(aiproxy.ELIMIT,
			"too many requests at once: this key may have %d in flight; retry when one ends", *lim.Concurrent),
			retry: time.Second, hdr: u.headers(now, lim)}
	}
	if lim.RPM != nil {
		if wait := u.reqs.wait(now, 1, *lim.RPM); wait > 0 {
			return nil, &Refusal{err: aiproxy.Errorf(aiproxy.ELIMIT,
				"rate limit reached: %d requests per minute for this key; retry in %s", *lim.RPM, formatWait(wait)),
				retry: wait, hdr: u.headers(now, lim)}
		}
	}
	if lim.TPM != nil && needTok > 0 {
		if wait := u.toks.wait(now, needTok, *lim.TPM); wait > 0 {
			msg := aiproxy.Errorf(aiproxy.ELIMIT,
				"rate limit reached: %d tokens per minute for this key, and this request may use %d; retry in %s",
				*lim.TPM, needTok, formatWait(wait))
			if needTok > *lim.TPM {
				msg = aiproxy.Errorf(aiproxy.ELIMIT,
					"this request may use %d tokens, more than this key's %d tokens per minute: lower max_tokens",
					needTok, *lim.TPM)
			}
			return nil, &Refusal{err: msg, retry: wait, hdr: u.headers(now, lim)}
		}
	}

	sec := now.Unix()
	u.inflight++
	u.reqs.add(sec, 1)
	if needTok > 0 {
		u.toks.add(sec, needTok)
	}
	u.tokens.reserved += needTok
	u.spend.reserved += needUSD
	r := &Reservation{
		u: u, sec: sec, metered: metered, tokens: needTok, usd: needUSD,
		tokEpoch: u.tokens.epoch, usdEpoch: u.spend.epoch,
	}
	if req.Price != nil {
		r.price, r.priced = *req.Price, true
	}
	r.hdr = u.headers(now, lim)
	return r, nil
}

// reserveShared is Reserve with the counters in the ledger: the user's
// counters are read into a user of their own, which reserve checks and
// takes from as it does in memory; what it took is stored as a hold.
func (l *Limiter) reserveShared(req Request) (*Reservation, error) {
	if err := l.sync(); err != nil {
		return nil, err
	}
	l.mu.RLock()
	lim := l.limitsOf(req.UserID)
	l.mu.RUnlock()
	if lim.Empty() {
		return nil, nil
	}
	now := l.now()
	var tokStart, usdStart *time.Time
	if lim.Tokens != nil {
		s := lim.Tokens.Period.Start(now)
		tokStart = &s
	}
	if lim.Spend != nil {
		s := lim.Spend.Period.Start(now)
		usdStart = &s
	}
	// One reservation of a user at a time per instance: they would queue
	// on the user's lock in the database anyway, each holding one of the
	// pool's few connections, which one busy key must not take from all.
	mu := &l.userLocks[uint64(req.UserID)%uint64(len(l.userLocks))]
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), reserveTimeout)
	defer cancel()
	var r *Reservation
	var refusal error
	id, err := l.ledger.Reserve(ctx, req.UserID, now, tokStart, usdStart, func(st aiproxy.LimitState) (aiproxy.Hold, bool) {
		u := sharedUser(lim, st, now)
		r, refusal = u.reserve(l, req, now)
		if r == nil {
			return aiproxy.Hold{}, false
		}
		h := aiproxy.Hold{Sec: r.sec, Tokens: r.tokens, MicroUSD: r.usd}
		if u.tokens.on {
			h.TokensStart = tokStart
		}
		if u.spend.on {
			h.SpendStart = usdStart
		}
		return h, true
	})
	if err != nil {
		// Fail closed, and say so: the database is down or slow.
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE,
			"this key's limits cannot be checked right now (aiproxy's database did not answer): retry shortly")
	}
	if refusal != nil || r == nil {
		return nil, refusal
	}
	r.u, r.ledger, r.id, r.window = nil, l.ledger, id, lim.RPM != nil || lim.TPM != nil
	return r, nil
}

// sharedUser is a user whose counters are st, the ledger's, at now.
func sharedUser(lim *aiproxy.Limits, st aiproxy.LimitState, now time.Time) *user {
	u := &user{lim: lim, inflight: st.Inflight}
	for _, w := range st.Window {
		// An instance whose clock is ahead of this one's took it "later
		// than now": it counts as now, not outside the window.
		sec := min(w.Sec, now.Unix())
		u.reqs.add(sec, w.Requests)
		u.toks.add(sec, w.Tokens)
	}
	if lim.Tokens != nil {
		p := lim.Tokens.Period
		u.tokens = budget{on: true, limit: lim.Tokens.Limit, period: p, start: p.Start(now), reset: p.Reset(now),
			used: st.Tokens.Used, reserved: st.Tokens.Reserved}
	}
	if lim.Spend != nil {
		p := lim.Spend.Period
		u.spend = budget{on: true, limit: microUSD(lim.Spend.LimitUSD), period: p, start: p.Start(now), reset: p.Reset(now),
			used: st.Spend.Used, reserved: st.Spend.Reserved}
	}
	return u
}

// quota is the refusal of a budget b that cannot hold need more.
func (u *user) quota(now time.Time, h headers, what string, need int64, format func(int64) string, b *budget) *Refusal {
	when := "it never resets (a total budget): ask the admin to raise it"
	var retry time.Duration
	if !b.reset.IsZero() {
		when = "it resets at " + b.reset.UTC().Format(time.RFC3339)
		retry = b.reset.Sub(now)
	}
	e := aiproxy.Errorf(aiproxy.EQUOTA, "%s budget of %s per %s is used up (%s left, this request may need %s): %s",
		what, format(b.limit), b.period, format(b.left()), format(need), when)
	if b.period == aiproxy.PeriodTotal {
		e = aiproxy.Errorf(aiproxy.EQUOTA, "%s budget of %s in total is used up (%s left, this request may need %s): %s",
			what, format(b.limit), format(b.left()), format(need), when)
	}
	return &Refusal{err: e, retry: retry, hdr: h}
}

func formatUSD(micro int64) string {
	return "$" + strconv.FormatFloat(float64(micro)/1e6, 'f', -1, 64)
}

// formatWait is d in whole seconds, rounded up, at least one: what
// Retry-After says.
func formatWait(d time.Duration) string { return roundUp(d).String() }

func roundUp(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1) / time.Second * time.Second
}

// headers are the x-ratelimit-* values of a user at now.
type headers struct {
	rpm, tpm          bool
	reqLimit, reqLeft int64
	reqReset          time.Duration
	tokLimit, tokLeft int64
	tokReset          time.Duration
}

func (u *user) headers(now time.Time, lim *aiproxy.Limits) headers {
	var h headers
	sec := now.Unix()
	if lim.RPM != nil {
		h.rpm, h.reqLimit = true, *lim.RPM
		h.reqLeft = max(*lim.RPM-u.reqs.sum(sec), 0)
		h.reqReset = u.reqs.resetIn(now)
	}
	if lim.TPM != nil {
		h.tpm, h.tokLimit = true, *lim.TPM
		h.tokLeft = max(*lim.TPM-u.toks.sum(sec), 0)
		h.tokReset = u.toks.resetIn(now)
	}
	return h
}

// set writes the headers with their canonical names, as http.Header.Set
// would, without canonicalising each name again.
func (h *headers) set(hd http.Header) {
	if h.rpm {
		hd["X-Ratelimit-Limit-Requests"] = []string{strconv.FormatInt(h.reqLimit, 10)}
		hd["X-Ratelimit-Remaining-Requests"] = []string{strconv.FormatInt(h.reqLeft, 10)}
		hd["X-Ratelimit-Reset-Requests"] = []string{resetForm(h.reqReset)}
	}
	if h.tpm {
		hd["X-Ratelimit-Limit-Tokens"] = []string{strconv.FormatInt(h.tokLimit, 10)}
		hd["X-Ratelimit-Remaining-Tokens"] = []string{strconv.FormatInt(h.tokLeft, 10)}
		hd["X-Ratelimit-Reset-Tokens"] = []string{resetForm(h.tokReset)}
	}
}

// resetForm is OpenAI's duration form of an x-ratelimit-reset-* value, in
// whole seconds rounded up: 0s, 1s, 6m0s.
func resetForm(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return roundUp(d).String()
}

// Reservation is what one request holds of its user's limits until it
// ends. Its methods are safe on a nil *Reservation (a user without
// limits) and act once: a second Settle or Release does nothing.
type Reservation struct {
	u        *user
	sec      int64 // the second it was taken, for the sliding windows
	metered  bool
	tokens   int64 // reserved total tokens
	usd      int64 // reserved micro-dollars
	tokEpoch uint64
	usdEpoch uint64
	price    aiproxy.Price
	priced   bool
	hdr      headers
	done     bool // guarded by u.mu

	// With the counters in a ledger: u is nil, and the hold is id.
	ledger     Ledger
	id         int64
	window     bool // the user has --rpm or --tpm: the settled hold counts for 60 s
	ledgerDone atomic.Bool
}

// Headers sets OpenAI's x-ratelimit-* headers on h: the -requests trio
// when --rpm is set, the -tokens trio when --tpm is set, remaining counted
// after this request.
func (r *Reservation) Headers(h http.Header) {
	if r == nil {
		return
	}
	r.hdr.set(h)
}

// Settle charges the request's real usage (total tokens = prompt +
// completion; cost as given, else at the request's price) and returns
// what was charged, for the request's usage record. When both token
// counts are nil (usage unknown: an upstream that omits it, a stream cut
// short) it charges the reservation: budgets fail closed.
func (r *Reservation) Settle(promptTokens, completionTokens, cachedTokens *int64, cost *float64) aiproxy.Charged {
	if r == nil {
		return aiproxy.Charged{}
	}
	var ch aiproxy.Charged
	switch {
	case !r.metered:
	case promptTokens == nil && completionTokens == nil:
		ch = aiproxy.Charged{Tokens: r.tokens, MicroUSD: r.usd}
	default:
		p, c, cached := deref(promptTokens), deref(completionTokens), deref(cachedTokens)
		ch.Tokens = p + c
		switch {
		case cost != nil:
			ch.MicroUSD = microUSD(*cost)
		case r.priced:
			ch.MicroUSD = microUSD(r.price.Cost(p, cached, c))
		}
	}
	if r.ledger != nil {
		if !r.ledgerDone.Swap(true) {
			r.ledgerCall(func(ctx context.Context) error { return r.ledger.Settle(ctx, r.id, ch, r.window) })
		}
		return ch
	}
	u := r.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.done {
		return ch
	}
	r.done = true
	u.inflight--
	u.toks.adjust(r.sec, ch.Tokens-r.tokens)
	if u.tokens.on && u.tokens.epoch == r.tokEpoch {
		u.tokens.reserved -= r.tokens
		u.tokens.used += ch.Tokens
	}
	if u.spend.on && u.spend.epoch == r.usdEpoch {
		u.spend.reserved -= r.usd
		u.spend.used += ch.MicroUSD
	}
	return ch
}

// Release gives back everything r holds: the request was refused, or the
// upstream answered with an error status, and is charged nothing.
func (r *Reservation) Release() {
	if r == nil {
		return
	}
	if r.ledger != nil {
		if !r.ledgerDone.Swap(true) {
			r.ledgerCall(func(ctx context.Context) error { return r.ledger.Release(ctx, r.id) })
		}
		return
	}
	u := r.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	u.inflight--
	u.reqs.adjust(r.sec, -1)
	u.toks.adjust(r.sec, -r.tokens)
	if u.tokens.on && u.tokens.epoch == r.tokEpoch {
		u.tokens.reserved -= r.tokens
	}
	if u.spend.on && u.spend.epoch == r.usdEpoch {
		u.spend.reserved -= r.usd
	}
}

// ledgerCall runs a settlement or release in the ledger; the ledger keeps
// one that failed and retries it (store.Ledger).
func (r *Reservation) ledgerCall(fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	_ = fn(ctx)
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// Refusal is Reserve's error: an *aiproxy.Error (errors.As finds it) with
// what the answer's headers say.
type Refusal struct {
	err   *aiproxy.Error
	retry time.Duration
	hdr   headers
}

func (e *Refusal) Error() string { return e.err.Message }

// Unwrap returns the *aiproxy.Error, for aiproxy.ErrorCode and httperr.
func (e *Refusal) Unwrap() error { return e.err }

// RetryAfter is how long a client refused by a rate limit (ELIMIT) should
// wait, in whole seconds rounded up and at least 1 s; 0 for any other
// error (a spent budget is not retried: see Headers).
func RetryAfter(err error) time.Duration {
	var r *Refusal
	if !errors.As(err, &r) || r.err.Code != aiproxy.ELIMIT {
		return 0
	}
	return roundUp(r.retry)
}

// Headers sets on h what the answer to a refusal carries: the
// x-ratelimit-* headers of the limits that are set, Retry-After (ELIMIT),
// and x-should-retry: false (EQUOTA, so that SDKs do not retry a spent
// budget). It does nothing for other errors.
func Headers(err error, h http.Header) {
	var r *Refusal
	if !errors.As(err, &r) {
		return
	}
	r.hdr.set(h)
	switch r.err.Code {
	case aiproxy.ELIMIT:
		h.Set("Retry-After", strconv.FormatInt(int64(roundUp(r.retry)/time.Second), 10))
	case aiproxy.EQUOTA:
		h.Set("x-should-retry", "false")
	}
}
