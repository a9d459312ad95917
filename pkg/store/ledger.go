package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// Ledger keeps limited users' counters in PostgreSQL (migration 0010), so
// that limits and budgets hold across every serve process on the database
// (CONTRACT section 8); pkg/limits calls it instead of its own in-memory
// counters when serve runs on PostgreSQL. SQLite has one serve per file and
// needs none of it.
//
// A reservation is one transaction under the user's advisory lock: read the
// user's holds and budget counters, let the limiter check them (the same
// check as in memory), insert the hold. Settling and releasing are one
// statement each. Each instance renews the leases of its holds in flight;
// a hold whose lease ran out belongs to an instance that died, and the
// user's next reservation deletes it.
type Ledger struct {
	d        *DB
	instance string
	lease    time.Duration

	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	retry []func(context.Context) error // settlements and releases that failed
}

// DefaultLease is how long a hold outlives the last renewal by its
// instance: at most this long after a crash, its requests' concurrency
// slots and reservations are given back.
const DefaultLease = 30 * time.Second

// pgLockLimits is the high half of the advisory lock key of one user's
// counters; the user id is the low half.
const pgLockLimits = 0x6c696d69 // "limi"

// pgNowMS is the database's clock in Unix milliseconds: leases are compared
// with one clock, whichever instance wrote them.
const pgNowMS = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"

// NewLedger returns the shared counters of a PostgreSQL database for one
// serve process, and starts renewing the leases of its holds every third
// of lease (0: DefaultLease). Close stops the renewal. On SQLite it returns
// nil.
func (d *DB) NewLedger(lease time.Duration) *Ledger {
	if !d.pg {
		return nil
	}
	if lease <= 0 {
		lease = DefaultLease
	}
	l := &Ledger{d: d, instance: instanceName(), lease: lease, stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew()
	return l
}

// Close stops renewing the leases; the holds still in flight expire with
// them. It does not close the database.
func (l *Ledger) Close() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

func (l *Ledger) renew() {
	defer close(l.done)
	t := time.NewTicker(l.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		// Renewed first: a backlog of retries must not make it late. A
		// hold marked expired while the database was out of reach holds
		// again.
		ctx, cancel := context.WithTimeout(context.Background(), l.lease/3)
		_, err := l.d.sql.ExecContext(ctx, "UPDATE limit_holds SET lease_until = "+pgNowMS+" + CAST(? AS BIGINT), expired = false "+
			"WHERE instance = ?", l.lease.Milliseconds(), l.instance)
		cancel()
		if err != nil {
			l.d.log.Warn("limits: renewing the leases of this instance's requests failed", "err", l.d.scrub(err.Error()))
			continue
		}
		ctx, cancel = context.WithTimeout(context.Background(), l.lease/3)
		l.retryFailed(ctx)
		cancel()
	}
}

// Reserve reads user id's counters at now, for the token and spend budget
// periods starting at tokensStart and spendStart (nil: that budget is not
// set), and calls take with them under the user's lock. When take returns
// ok, its hold is stored and its id returned; otherwise nothing is held
// and the id is 0.
func (l *Ledger) Reserve(ctx context.Context, userID int64, now time.Time, tokensStart, spendStart *time.Time,
	take func(aiproxy.LimitState) (aiproxy.Hold, bool)) (id int64, err error) {
	defer func() {
		// The limiter answers 503 and says no more: the cause goes here.
		if err != nil {
			l.d.log.Warn("limits: a reservation could not be taken", "err", l.d.scrub(err.Error()))
		}
	}()
	tx, err := l.d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, dbError(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", pgLockLimits<<32|userID&0xffffffff); err != nil {
		return 0, dbError(err)
	}
	sec := now.Unix()
	// Holds whose lease ran out (their instance died) expire, and go a day
	// later (by then their instance is surely gone); seconds out of the
	// window go.
	if _, err := tx.ExecContext(ctx, `WITH x AS (
			UPDATE limit_holds SET expired = true
			WHERE user_id = ? AND NOT expired AND lease_until < `+pgNowMS+`),
		y AS (DELETE FROM limit_window WHERE user_id = ? AND sec <= ?)
		DELETE FROM limit_holds WHERE user_id = ? AND expired AND lease_until < `+pgNowMS+` - 86400000`,
		userID, userID, sec-60, userID); err != nil {
		return 0, dbError(err)
	}
	var st aiproxy.LimitState
	// The holds before the counters: a settlement committing in between
	// then counts twice (refusing more), never not at all.
	if err := l.readHolds(ctx, tx, userID, sec, ptrMS(tokensStart), ptrMS(spendStart), &st); err != nil {
		return 0, err
	}
	if st.Tokens.Used, st.Spend.Used, err = l.used(ctx, tx, userID, tokensStart, spendStart); err != nil {
		return 0, err
	}
	h, ok := take(st)
	if ok {
		err = tx.QueryRowContext(ctx, `INSERT INTO limit_holds
			(user_id, instance, sec, tokens, micro_usd, tokens_start, spend_start, lease_until)
			VALUES (?, ?, ?, ?, ?, ?, ?, `+pgNowMS+` + CAST(? AS BIGINT)) RETURNING id`,
			userID, l.instance, h.Sec, h.Tokens, h.MicroUSD, ptrMS(h.TokensStart), ptrMS(h.SpendStart),
			l.lease.Milliseconds()).Scan(&id)
		if err != nil {
			return 0, dbError(err)
		}
	}
	if err := tx.Commit(); err != nil {
		if id != 0 {
			// It may have committed all the same, unacknowledged: give it
			// back, or this instance would renew it as long as it runs.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			l.Release(rctx, id)
			cancel()
		}
		return 0, dbError(err)
	}
	return id, nil
}

// readHolds adds user id's holds and window to st: the window's counts
// (requests settled, and in flight, at their second), the requests in
// flight, and what they reserve of the budget periods starting at tok and
// usd. PostgreSQL sums them, a row per second.
func (l *Ledger) readHolds(ctx context.Context, tx *sql.Tx, userID, sec int64, tok, usd sql.NullInt64, st *aiproxy.LimitState) error {
	rows, err := tx.QueryContext(ctx, `SELECT sec, SUM(n), SUM(t), SUM(f), SUM(tr), SUM(ur) FROM (
			SELECT sec, 1 AS n, tokens AS t, CASE WHEN expired THEN 0 ELSE 1 END AS f,
				CASE WHEN NOT expired AND tokens_start = ? THEN tokens ELSE 0 END AS tr,
				CASE WHEN NOT expired AND spend_start = ? THEN micro_usd ELSE 0 END AS ur
			FROM limit_holds WHERE user_id = ?
			UNION ALL
			SELECT sec, requests, tokens, 0, 0, 0 FROM limit_window WHERE user_id = ?) AS x
		GROUP BY sec ORDER BY sec`, tok, usd, userID, userID)
	if err != nil {
		return dbError(err)
	}
	defer rows.Close()
	for rows.Next() {
		var w aiproxy.WindowCount
		var inflight, tokReserved, usdReserved int64
		if err := rows.Scan(&w.Sec, &w.Requests, &w.Tokens, &inflight, &tokReserved, &usdReserved); err != nil {
			return dbError(err)
		}
		if w.Sec > sec-60 {
			st.Window = append(st.Window, w)
		}
		st.Inflight += inflight
		st.Tokens.Reserved += tokReserved
		st.Spend.Reserved += usdReserved
	}
	return dbError(rows.Err())
}

// used is what user id was charged in the periods of its token and spend
// budgets starting at tok and usd (nil: not set, 0). The period's first
// reservation seeds its counter from the usage rows, replacing the
// counter of an earlier period.
func (l *Ledger) used(ctx context.Context, tx *sql.Tx, userID int64, tok, usd *time.Time) (tokens, microUSD int64, err error) {
	if tok == nil && usd == nil {
		return 0, 0, nil
	}
	type counter struct{ start, used int64 }
	have := map[string]counter{}
	rows, err := tx.QueryContext(ctx, "SELECT kind, period_start, used FROM limit_used WHERE user_id = ?", userID)
	if err != nil {
		return 0, 0, dbError(err)
	}
	for rows.Next() {
		var kind string
		var c counter
		if err := rows.Scan(&kind, &c.start, &c.used); err != nil {
			rows.Close()
			return 0, 0, dbError(err)
		}
		have[kind] = c
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, dbError(err)
	}
	var out [2]int64
	for i, k := range []struct {
		kind  string
		start *time.Time
	}{{"tokens", tok}, {"spend", usd}} {
		if k.start == nil {
			continue
		}
		if c, ok := have[k.kind]; ok && c.start == ms(*k.start) {
			out[i] = c.used
			continue
		}
		// In the transaction: every connection of the pool may be waiting
		// for this user's lock.
		m, err := l.d.chargedSince(ctx, tx, *k.start, &userID)
		if err != nil {
			return 0, 0, err
		}
		out[i] = m[userID].Tokens
		if k.kind == "spend" {
			out[i] = m[userID].MicroUSD
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO limit_used (user_id, kind, period_start, used) VALUES (?, ?, ?, ?)
			ON CONFLICT (user_id, kind) DO UPDATE SET period_start = excluded.period_start, used = excluded.used`,
			userID, k.kind, ms(*k.start), out[i]); err != nil {
			return 0, 0, dbError(err)
		}
	}
	return out[0], out[1], nil
}

// retryFailed runs again the settlements and releases that failed (the
// database was unreachable): until they succeed, this instance renews
// their holds, which would otherwise hold the user's slots for as long as
// it runs.
func (l *Ledger) retryFailed(ctx context.Context) {
	l.mu.Lock()
	ops := l.retry
	l.retry = nil
	l.mu.Unlock()
	for i, op := range ops {
		if err := op(ctx); err != nil {
			l.mu.Lock()
			l.retry = append(l.retry, ops[i:]...)
			l.mu.Unlock()
			return
		}
	}
}

// orRetry runs op, and keeps it for retryFailed when it fails.
func (l *Ledger) orRetry(ctx context.Context, op func(context.Context) error) error {
	err := op(ctx)
	if err != nil {
		l.d.log.Warn("limits: settling a request failed, retrying with the next lease renewal", "err", l.d.scrub(err.Error()))
		l.mu.Lock()
		l.retry = append(l.retry, op)
		l.mu.Unlock()
	}
	return err
}

// Settle ends hold id with what its request was charged: the charge is
// added to the counters of the budget periods the hold was reserved
// against, and, with window (the user has --rpm or --tpm), to its second
// of the window. A hold already settled, released or gone is left alone.
func (l *Ledger) Settle(ctx context.Context, id int64, ch aiproxy.Charged, window bool) error {
	return l.orRetry(ctx, func(ctx context.Context) error { return l.settle(ctx, id, ch, window) })
}

func (l *Ledger) settle(ctx context.Context, id int64, ch aiproxy.Charged, window bool) error {
	_, err := l.d.sql.ExecContext(ctx, `WITH h AS (
			DELETE FROM limit_holds WHERE id = ? RETURNING user_id, sec, tokens_start, spend_start),
		w AS (
			INSERT INTO limit_window (user_id, sec, requests, tokens)
			SELECT user_id, sec, 1, CAST(? AS BIGINT) FROM h WHERE CAST(? AS BIGINT) = 1
			ON CONFLICT (user_id, sec) DO UPDATE
			SET requests = limit_window.requests + 1, tokens = limit_window.tokens + excluded.tokens)
		UPDATE limit_used AS u SET used = u.used + CASE u.kind WHEN 'tokens' THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END
		FROM h WHERE u.user_id = h.user_id AND
			(u.kind = 'tokens' AND u.period_start = h.tokens_start OR u.kind = 'spend' AND u.period_start = h.spend_start)`,
		id, ch.Tokens, boolInt(window), ch.Tokens, ch.MicroUSD)
	return dbError(err)
}

// Release deletes hold id: its request counts for nothing.
func (l *Ledger) Release(ctx context.Context, id int64) error {
	return l.orRetry(ctx, func(ctx context.Context) error {
		_, err := l.d.sql.ExecContext(ctx, "DELETE FROM limit_holds WHERE id = ?", id)
		return dbError(err)
	})
}

// instanceName names this process's holds: the host name, the process id
// and random bytes, so that a restarted process never renews the leases of
// the one before it.
func instanceName() string {
	host, _ := os.Hostname()
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}

// boolInt is b as 0 or 1: the store's arguments carry booleans as
// SQLite's integers.
func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func ptrMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*t), Valid: true}
}
