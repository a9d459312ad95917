package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// On PostgreSQL, serve's cache is kept current by a listener instead of a
// query per lookup (~75 µs a round trip, where SQLite's read takes ~11 µs):
// migration 0011's trigger notifies authChannel in every transaction that
// bumps auth_version, and the listener, on a connection of its own, marks
// the cache stale on each notification. While it is connected, a lookup
// with nothing notified since the last read answers from memory; the first
// lookup after a notification reads the counter, as before. So a key reset
// or deleted through any instance or the CLI is refused by every other
// instance as soon as the notification reaches it: a round trip, well
// within CONTRACT section 8's second.
//
// If the connection drops, every lookup reads the counter again (the
// unwatched behaviour) until the listener is back: it reconnects, LISTENs,
// and only then marks the cache stale, so that the version read that
// follows sees every commit whose notification it may have missed.

// authChannel is the channel migration 0011_notify.sql notifies.
const authChannel = "aiproxy_auth"

// Defaults of a watched cache and its listener.
const (
	// DefaultOutageGrace is how long serve on PostgreSQL keeps proxying
	// for the keys it has cached when the database cannot be reached
	// (README, "Storage"); past it, requests are refused with 503.
	DefaultOutageGrace = 60 * time.Second
	outageRetry        = time.Second            // a version read at most this often in an outage
	versionTimeout     = 2 * time.Second        // a version read slower than this counts as failed
	listenQuiet        = 400 * time.Millisecond // after this long without a message, ping
	// listenFresh is how long the listener's last sign of life (LISTEN, a
	// notification, a ping's answer) vouches for the cache: a connection
	// that died without a word is no longer trusted after it, so that a
	// revocation reaches every instance within a second either way.
	listenFresh    = time.Second
	listenRetry    = 100 * time.Millisecond // first wait before reconnecting; doubles
	listenMaxRetry = time.Second
)

// WatchOptions tunes the listener that ClaimServer starts on PostgreSQL.
// Zero fields take the defaults above; the tests shorten them.
type WatchOptions struct {
	// Grace is how long cached keys are served while the database cannot
	// be reached (DefaultOutageGrace).
	Grace time.Duration
	// Retry is the least time between two version reads in an outage.
	Retry time.Duration
	// Quiet is how long the listener waits for a notification before it
	// checks that its connection still answers.
	Quiet time.Duration
	// Reconnect is the first wait before reconnecting; it doubles up to
	// a second.
	Reconnect time.Duration
	// Now is the clock of the grace period (time.Now).
	Now func() time.Time
}

// listening marks the cache connected and stale: called once LISTEN is in
// force, so the version read that the next lookup makes sees every commit
// whose notification was missed while disconnected. notes is bumped before
// live is set, and syncWatched loads live before notes, so a lookup that
// sees this live also sees this bump.
func (c *cache) listening() {
	c.mu.Lock()
	c.notes.Add(1)
	c.live.Store(true)
	c.failing = false // the next lookup reads the version; it may fail again
	c.mu.Unlock()
}

// notified marks the cache stale: a notification arrived.
func (c *cache) notified() { c.notes.Add(1) }

// heard records a sign of life of the listener's connection.
func (c *cache) heard() { c.heardAt.Store(c.now().UnixNano()) }

// fresh reports whether the listener was heard from within c.fresh.
func (c *cache) fresh() bool { return c.now().UnixNano()-c.heardAt.Load() < int64(c.freshFor) }

// unlistened marks the listener disconnected: every lookup reads the
// version until listening.
func (c *cache) unlistened() {
	c.mu.Lock()
	if c.live.Load() {
		c.okAt = c.now() // current until now, as far as anyone can know
	}
	c.live.Store(false)
	c.mu.Unlock()
}

// watch starts the listener of d's cache (PostgreSQL only) and returns
// the function that stops it. Lookups skip the version read from the
// listener's first connection on.
func (d *DB) watch(o WatchOptions) (stop func()) {
	c := d.cache
	c.mu.Lock()
	c.watched = true
	c.grace = cmpOr(o.Grace, DefaultOutageGrace)
	c.retry = cmpOr(o.Retry, outageRetry)
	c.timeout = versionTimeout
	c.freshFor = max(listenFresh, 2*cmpOr(o.Quiet, listenQuiet))
	if o.Now != nil {
		c.now = o.Now
	}
	c.okAt = c.now()
	c.mu.Unlock()

	cfg := d.pgCfg.Copy()
	cfg.OnNotification = func(*pgconn.PgConn, *pgconn.Notification) { c.notified(); c.heard() }
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = listenAppName
	l := &listener{cfg: cfg, c: c, d: d,
		quiet: cmpOr(o.Quiet, listenQuiet), retry: cmpOr(o.Reconnect, listenRetry)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// listenAppName is the listener connection's application_name, which shows
// in pg_stat_activity.
const listenAppName = "aiproxy-listen"

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// listener holds one connection that LISTENs on authChannel.
type listener struct {
	cfg   *pgconn.Config
	c     *cache
	d     *DB
	quiet time.Duration
	retry time.Duration
}

// run connects, listens until the connection fails, and reconnects, until
// ctx ends.
func (l *listener) run(ctx context.Context) {
	wait := l.retry
	down := false // logged as down since the last connection
	for {
		connected, err := l.session(ctx, down)
		l.c.unlistened()
		if ctx.Err() != nil {
			return
		}
		if connected {
			wait, down = l.retry, false
		}
		if !down {
			l.d.log.Warn("auth listener disconnected: checking keys on every request until it is back",
				"db", l.d.path, "err", l.d.scrub(rootCause(err)))
			down = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, listenMaxRetry)
	}
}

// session runs one connection: LISTEN, then wait for notifications (which
// the connection's OnNotification hands to the cache), pinging after each
// quiet period so that a connection that died without a word is noticed.
// It reports whether LISTEN took effect. The first connection is not
// logged (serve's first line comes after it); a reconnection is.
func (l *listener) session(ctx context.Context, reconnect bool) (connected bool, err error) {
	conn, err := pgconn.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		// The claim goes now, not whenever the server gets round to the
		// closed connection: a rekey right after serve stops must find it
		// gone. (A broken connection just fails here.)
		conn.Exec(cctx, "SELECT pg_advisory_unlock_all()").Close()
		conn.Close(cctx)
		cancel()
	}()
	if err := conn.Exec(ctx, "LISTEN "+authChannel).Close(); err != nil {
		return false, err
	}
	// serve's claim, which keeps rekey out, lives on a connection that a
	// server restart breaks: this one, which reconnects, claims it again.
	res, err := conn.Exec(ctx, fmt.Sprintf("SELECT pg_try_advisory_lock_shared(%d)", int64(pgLockServe))).ReadAll()
	if err != nil {
		return false, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || string(res[0].Rows[0][0]) != "t" {
		l.d.log.Error("a rekey holds the database: this serve's secret may be out of date; restart it with the new one",
			"db", l.d.path)
	}
	l.c.listening()
	l.c.heard()
	if reconnect {
		l.d.log.Info("auth listener reconnected", "db", l.d.path)
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, l.quiet)
		err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return true, ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded) || conn.IsClosed():
			return true, err
		}
		pctx, cancel := context.WithTimeout(ctx, l.quiet)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return true, err
		}
		l.c.heard()
	}
}
