package limits_test

import (
	"database/sql"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// The promises of CONTRACT section 8 for limits: several serve processes on
// one PostgreSQL database hold every limit together. Each instance here is
// a store handle of its own with its own ledger and limiter, as each serve
// process has; they always run against PostgreSQL (skipped where none is
// installed, never in CI).

// instance is one serve process's view of the shared database.
type instance struct {
	db     *store.DB
	ledger *store.Ledger
	lim    *limits.Limiter
}

// newInstances opens n instances on one new PostgreSQL database, with
// the leases of their holds lasting lease, and returns them with an env on
// the first for setting users and limits.
func newInstances(t testing.TB, n int, lease time.Duration) (*env, []*instance) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	e := &env{t: t, path: dsn, db: open(t, dsn), clock: &clock{t: t0}}
	ins := make([]*instance, n)
	for i := range ins {
		d := open(t, dsn)
		ld := d.NewLedger(lease)
		t.Cleanup(ld.Close)
		ins[i] = &instance{db: d, ledger: ld}
	}
	return e, ins
}

// start makes each instance's limiter, once users and limits are set.
func start(t testing.TB, e *env, ins []*instance) {
	t.Helper()
	for _, in := range ins {
		in.db.UserByKeyHash(t.Context(), "no-such-key") // as a request does first
		l, err := limits.New(t.Context(), in.db, e.clock.Now, limits.WithLedger(in.ledger))
		if err != nil {
			t.Fatal(err)
		}
		in.lim = l
	}
}

// TestShared_HundredRequestsOverTwoInstancesLetThroughOnlyWhatFits: 100
// requests at once, spread over two instances, against a limit that covers
// some of them: exactly that many are reserved, whichever instance they
// reach, and the others are refused with the limit's own error.
func TestShared_HundredRequestsOverTwoInstancesLetThroughOnlyWhatFits(t *testing.T) {
	t.Parallel()
	// Each request reserves 100 prompt + 1000 output tokens, $0.01025 at
	// gpt-4o's price.
	for _, tc := range []struct {
		name  string
		flags []string
		want  int
		code  string
	}{
		{"token budget", []string{"tokens", "11000/day"}, 10, aiproxy.EQUOTA},
		{"spend budget", []string{"spend", "0.1025/month"}, 10, aiproxy.EQUOTA},
		{"total budget", []string{"tokens", "5500/total"}, 5, aiproxy.EQUOTA},
		{"concurrent", []string{"concurrent", "3"}, 3, aiproxy.ELIMIT},
		{"rpm", []string{"rpm", "7"}, 7, aiproxy.ELIMIT},
		{"tpm", []string{"tpm", "8800"}, 8, aiproxy.ELIMIT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, ins := newInstances(t, 2, 0)
			id := e.user("alice")
			e.limit("alice", tc.flags...)
			start(t, e, ins)

			var mu sync.Mutex
			var held []*limits.Reservation
			refused := 0
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := ins[i%2].lim.Reserve(limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 100,
						MaxOutputTokens: 1000, Price: gpt})
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil && r != nil:
						held = append(held, r)
					case code(err) == tc.code:
						refused++
					default:
						t.Errorf("Reserve() = %v, %v; want a reservation or %s", r, err, tc.code)
					}
				}()
			}
			wg.Wait()
			if len(held) != tc.want || refused != 100-tc.want {
				t.Errorf("%d reserved, %d refused over two instances; want %d and %d", len(held), refused, tc.want, 100-tc.want)
			}
			// Released, everything is given back: on the other instance too.
			for _, r := range held {
				r.Release()
			}
			if tc.name == "rpm" || tc.name == "tpm" {
				e.clock.Add(time.Minute) // a release gives back the window too; a minute makes sure
			}
			for _, in := range ins {
				r, err := in.lim.Reserve(limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 100, MaxOutputTokens: 1000, Price: gpt})
				if err != nil {
					t.Errorf("after every reservation was released: %v", err)
				}
				r.Release()
			}
		})
	}
}

// TestShared_SettledUsageCountsOnEveryInstance: requests settled on either
// instance fill one budget: taking turns, the requests that fit get
// through and the next is refused on both.
func TestShared_SettledUsageCountsOnEveryInstance(t *testing.T) {
	t.Parallel()
	e, ins := newInstances(t, 2, 0)
	id := e.user("alice")
	e.limit("alice", "tokens", "2000/day")
	start(t, e, ins)
	n := 0
	for i := 0; ; i++ {
		r, err := ins[i%2].lim.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 300})
		if err != nil {
			if code(err) != aiproxy.EQUOTA {
				t.Fatalf("request %d: %v, want EQUOTA", i, err)
			}
			break
		}
		// Each reserves 400 and uses 200: nine fit, and leave 200.
		r.Settle(ptr[int64](100), ptr[int64](100), nil, nil)
		n++
	}
	if n != 9 {
		t.Errorf("%d requests settled at 200 tokens fit a 2000-token budget reserving 400 each; want 9", n)
	}
	for i, in := range ins {
		if _, err := in.lim.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 101}); code(err) != aiproxy.EQUOTA {
			t.Errorf("instance %d, 201 tokens with 200 left: %v, want EQUOTA", i, err)
		}
		r, err := in.lim.Reserve(limits.Request{UserID: id, Model: "m", PromptTokens: 100, MaxOutputTokens: 100})
		if err != nil {
			t.Errorf("instance %d, 200 tokens with 200 left: %v", i, err)
		}
		r.Release()
	}
}

// TestShared_DeadInstanceGivesItsSlotsBackAfterItsLease: an instance that
// dies with a request in flight (it stops renewing, and never settles)
// holds that request's concurrency slot and reservation only until its
// lease runs out; while it lives, its renewals keep them held however long
// the request runs.
func TestShared_DeadInstanceGivesItsSlotsBackAfterItsLease(t *testing.T) {
	t.Parallel()
	const lease = 3 * time.Second
	e, ins := newInstances(t, 2, lease)
	id := e.user("alice")
	e.limit("alice", "concurrent", "1", "tokens", "1000/day")
	start(t, e, ins)
	a, b := ins[0], ins[1]
	if _, err := a.lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 500}); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	leaseEnd := func() (until, now int64) {
		t.Helper()
		err := raw.QueryRow(`SELECT lease_until, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)
			FROM limit_holds WHERE user_id = $1`, id).Scan(&until, &now)
		if err != nil {
			t.Fatal(err)
		}
		return until, now
	}
	first, _ := leaseEnd()
	// Alive: past its first lease, the hold is renewed and still counts.
	poll(t, func() bool { _, now := leaseEnd(); return now > first+lease.Milliseconds() })
	if until, now := leaseEnd(); until <= now {
		t.Fatalf("a living instance's hold expired: lease until %d, now %d", until, now)
	}
	if _, err := b.lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1}); code(err) != aiproxy.ELIMIT {
		t.Fatalf("while A's request runs: %v, want ELIMIT", err)
	}
	// A dies: the slot and the 500 reserved tokens come back once its
	// lease ends, without anyone releasing them.
	a.ledger.Close()
	var r *limits.Reservation
	poll(t, func() bool {
		r, err = b.lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1000})
		if c := code(err); err != nil && c != aiproxy.EQUOTA && c != aiproxy.ELIMIT {
			t.Fatalf("after A died: %v, want EQUOTA or ELIMIT until its lease ends", err)
		}
		return err == nil
	})
	r.Release()
}

// poll waits for cond, checking it every 20 ms, for at most 20 s.
func poll(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkShared_ReserveSettle is what a limited user's request costs with
// the counters in PostgreSQL: the reservation's transaction before the
// request goes upstream, and the settlement after it ended (a loopback
// database; the unlimited user reads no database at all). The clock moves
// a second every 20 requests, so the --rpm window holds 1,200 requests (in
// 60 rows, one a second).
//
//	go test -run '^$' -bench BenchmarkShared -benchtime 2000x ./pkg/limits
func BenchmarkShared_ReserveSettle(b *testing.B) {
	for _, bc := range []struct {
		name  string
		flags []string
	}{
		{"budgets", []string{"concurrent", "1000", "tokens", "1000000000000/day", "spend", "1000000/month"}},
		{"every_limit", []string{"rpm", "1000000000", "tpm", "1000000000000", "concurrent", "1000",
			"tokens", "1000000000000/day", "spend", "1000000/month", "models", "gpt-4o*,claude-*"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, ins := newInstances(b, 1, 0)
			id := e.user("alice")
			e.limit("alice", bc.flags...)
			start(b, e, ins)
			l := ins[0].lim
			req := limits.Request{UserID: id, Model: "gpt-4o", PromptTokens: 1000, MaxOutputTokens: 1000, Price: gpt}
			p, c := ptr[int64](1000), ptr[int64](200)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if i++; i%20 == 0 {
					e.clock.Add(time.Second)
				}
				r, err := l.Reserve(req)
				if err != nil {
					b.Fatal(err)
				}
				r.Settle(p, c, nil, nil)
			}
		})
	}
}

// TestShared_ExpiredHoldStillChargesItsRequest: an instance that could not
// renew its holds for longer than a lease (the database out of its reach)
// loses their slots to the other instances, but what its requests spent
// still counts against the budget when they settle.
func TestShared_ExpiredHoldStillChargesItsRequest(t *testing.T) {
	t.Parallel()
	e, ins := newInstances(t, 2, time.Second)
	id := e.user("alice")
	e.limit("alice", "tokens", "1000/day")
	start(t, e, ins)
	a, b := ins[0], ins[1]
	r, err := a.lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 500})
	if err != nil {
		t.Fatal(err)
	}
	a.ledger.Close()      // A's renewals stop
	poll(t, func() bool { // until A's hold expired, 501 tokens do not fit
		r2, err := b.lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 501})
		if err != nil && code(err) != aiproxy.EQUOTA {
			t.Fatal(err)
		}
		r2.Release()
		return err == nil
	})
	r.Settle(ptr[int64](0), ptr[int64](900), nil, nil) // A's request used 900
	if r3, err := b.lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 101}); code(err) != aiproxy.EQUOTA {
		t.Errorf("101 tokens with 900 of 1000 used: %v, %v; want EQUOTA", r3, err)
		r3.Release()
	}
}

// TestShared_InstanceWithItsClockAheadCountsInTheWindow: the requests an
// instance whose clock is a second ahead took count in the --rpm window of
// the others.
func TestShared_InstanceWithItsClockAheadCountsInTheWindow(t *testing.T) {
	t.Parallel()
	e, ins := newInstances(t, 2, 0)
	id := e.user("alice")
	e.limit("alice", "rpm", "5")
	start(t, e, ins)
	ahead := &clock{t: t0.Add(time.Second)}
	la, err := limits.New(t.Context(), ins[0].db, ahead.Now, limits.WithLedger(ins[0].ledger))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := la.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := ins[1].lim.Reserve(limits.Request{UserID: id, Model: "m", MaxOutputTokens: 1}); code(err) != aiproxy.ELIMIT {
		t.Errorf("the sixth request of a 5 rpm key, on the instance a second behind: %v, %v; want ELIMIT", r, err)
	}
}
