package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
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
		ctx, cancel := context.WithTimeout(context.Background(), l.lease/3)
		l.retryFailed(ctx)
		_, err := l.d.sql.ExecContext(ctx, "UPDATE limit_holds SET lease_until = "+pgNowMS+" + CAST(? AS BIGINT) WHERE instance = ? AND NOT settled",
			l.lease.Milliseconds(), l.instance)
		cancel()
		if err != nil {
			l.d.log.Warn("limits: renewing the leases of this instance's requests failed", "err", l.d.scrub(err.Error()))
		}
	}
}

// Reserve reads user id's counters at now, for the token and spend budget
// periods starting at tokensStart and spendStart (nil: that budget is not
// set), and calls take with them under the user's lock. When take returns
// ok, its hold is stored and its id returned; otherwise nothing is held
// and the id is 0.
func (l *Ledger) Reserve(ctx context.Context, userID int64, now time.Time, tokensStart, spendStart *time.Time,
	take func(aiproxy.LimitState) (aiproxy.Hold, bool)) (id int64, err error) {
	tx, err := l.d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, dbError(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", pgLockLimits<<32|userID&0xffffffff); err != nil {
		return 0, dbError(err)
	}
	sec := now.Unix()
	// Holds of instances that died, and settled ones out of the window.
	if _, err := tx.ExecContext(ctx, "DELETE FROM limit_holds WHERE user_id = ? AND "+
		"(settled AND sec <= ? OR NOT settled AND lease_until < "+pgNowMS+")", userID, sec-60); err != nil {
		return 0, dbError(err)
	}
	var st aiproxy.LimitState
	// The holds before the counters: a settlement committing in between
	// then counts twice (refusing more), never not at all.
	if err := l.readHolds(ctx, tx, userID, sec, ptrMS(tokensStart), ptrMS(spendStart), &st); err != nil {
		return 0, err
	}
	if st.Tokens.Used, err = l.used(ctx, tx, userID, "tokens", tokensStart); err != nil {
		return 0, err
	}
	if st.Spend.Used, err = l.used(ctx, tx, userID, "spend", spendStart); err != nil {
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
	return id, dbError(tx.Commit())
}

// readHolds adds user id's holds to st: the window's counts, the requests
// in flight, and what they reserve of the budget periods starting at tok
// and usd.
func (l *Ledger) readHolds(ctx context.Context, tx *sql.Tx, userID, sec int64, tok, usd sql.NullInt64, st *aiproxy.LimitState) error {
	rows, err := tx.QueryContext(ctx, `SELECT sec, settled, tokens, micro_usd, tokens_start, spend_start
		FROM limit_holds WHERE user_id = ? ORDER BY sec`, userID)
	if err != nil {
		return dbError(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s, t, u int64
		var settled bool
		var ts, us sql.NullInt64
		if err := rows.Scan(&s, &settled, &t, &u, &ts, &us); err != nil {
			return dbError(err)
		}
		if s > sec-60 {
			if n := len(st.Window); n > 0 && st.Window[n-1].Sec == s {
				st.Window[n-1].Requests++
				st.Window[n-1].Tokens += t
			} else {
				st.Window = append(st.Window, aiproxy.WindowCount{Sec: s, Requests: 1, Tokens: t})
			}
		}
		if settled {
			continue
		}
		st.Inflight++
		if tok.Valid && ts == tok {
			st.Tokens.Reserved += t
		}
		if usd.Valid && us == usd {
			st.Spend.Reserved += u
		}
	}
	return dbError(rows.Err())
}

// used is what user id was charged in the period of budget kind starting
// at start (nil: none set, 0). The period's first reservation seeds it from
// the usage rows, replacing the counter of an earlier period.
func (l *Ledger) used(ctx context.Context, tx *sql.Tx, userID int64, kind string, start *time.Time) (int64, error) {
	if start == nil {
		return 0, nil
	}
	var from, used int64
	err := tx.QueryRowContext(ctx, "SELECT period_start, used FROM limit_used WHERE user_id = ? AND kind = ?",
		userID, kind).Scan(&from, &used)
	switch {
	case err == nil && from == ms(*start):
		return used, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return 0, dbError(err)
	}
	// In the transaction: every connection of the pool may be waiting for
	// this user's lock.
	m, err := l.d.chargedSince(ctx, tx, *start, &userID)
	if err != nil {
		return 0, err
	}
	used = m[userID].Tokens
	if kind == "spend" {
		used = m[userID].MicroUSD
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO limit_used (user_id, kind, period_start, used) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, kind) DO UPDATE SET period_start = excluded.period_start, used = excluded.used`,
		userID, kind, ms(*start), used)
	return used, dbError(err)
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

// Settle marks hold id settled with what its request was charged, and adds
// that to the counters of the budget periods it was reserved against. A
// hold already settled, released or expired is left alone.
func (l *Ledger) Settle(ctx context.Context, id int64, ch aiproxy.Charged) error {
	return l.orRetry(ctx, func(ctx context.Context) error { return l.settle(ctx, id, ch) })
}

func (l *Ledger) settle(ctx context.Context, id int64, ch aiproxy.Charged) error {
	_, err := l.d.sql.ExecContext(ctx, `WITH h AS (
			UPDATE limit_holds SET settled = true, tokens = ?, micro_usd = ? WHERE id = ? AND NOT settled
			RETURNING user_id, tokens_start, spend_start)
		UPDATE limit_used AS u SET used = u.used + CASE u.kind WHEN 'tokens' THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END
		FROM h WHERE u.user_id = h.user_id AND
			(u.kind = 'tokens' AND u.period_start = h.tokens_start OR u.kind = 'spend' AND u.period_start = h.spend_start)`,
		ch.Tokens, ch.MicroUSD, id, ch.Tokens, ch.MicroUSD)
	return dbError(err)
}

// Release deletes hold id, unless it was settled: its request counts for
// nothing.
func (l *Ledger) Release(ctx context.Context, id int64) error {
	return l.orRetry(ctx, func(ctx context.Context) error {
		_, err := l.d.sql.ExecContext(ctx, "DELETE FROM limit_holds WHERE id = ? AND NOT settled", id)
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

func ptrMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*t), Valid: true}
}
