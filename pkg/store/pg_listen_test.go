package store

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// pollUntil calls cond until it holds or timeout passes, and reports
// whether it held.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not a synchronisation
	}
}

// openServe opens dsn as serve does: the claim starts the listener.
func openServe(t *testing.T, dsn string, w WatchOptions) *DB {
	t.Helper()
	d, err := Open(t.Context(), dsn, WithSecretKey(TestSecret, "AIPROXY_SECRET_KEY"), WithWatchOptions(w))
	if err != nil {
		t.Fatal(err)
	}
	release, err := d.ClaimServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		release()
		d.Close()
	})
	return d
}

func openPG(t *testing.T, dsn string) *DB {
	t.Helper()
	d, err := Open(t.Context(), dsn, WithSecretKey(TestSecret, "AIPROXY_SECRET_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func waitLive(t *testing.T, d *DB, want bool) {
	t.Helper()
	if !pollUntil(10*time.Second, func() bool { return d.cache.live.Load() == want }) {
		t.Fatalf("listener connected = %v after 10 s, want %v", !want, want)
	}
}

func mustCreate(t *testing.T, d *DB, name, key string) {
	t.Helper()
	if err := d.CreateUser(t.Context(), name, keys.Hash(key), keys.Hint(key), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestListen_LookupsSkipTheVersionReadAndRevocationArrivesWithinOneSecond:
// on PostgreSQL, serve's lookups are answered from memory while the
// listener is connected (no auth_version read, counted); a key reset or
// deleted through another handle (the CLI, another instance) is refused
// within one second; one reset through serve's own handle is refused at
// its very next lookup.
func TestListen_LookupsSkipTheVersionReadAndRevocationArrivesWithinOneSecond(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	// No ping during the test: the LISTEN vouches for the cache for two
	// minutes (a ping each 400 ms late under load could lapse a second).
	serve := openServe(t, dsn, WatchOptions{Quiet: time.Minute})
	cli := openPG(t, dsn)
	ctx := t.Context()
	alice, bob, carol := cacheKey(1), cacheKey(2), cacheKey(3)
	mustCreate(t, cli, "alice", alice)
	mustCreate(t, cli, "bob", bob)
	mustCreate(t, cli, "carol", carol)
	waitLive(t, serve, true)

	for _, k := range []string{alice, bob, carol} {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(k)); err != nil {
			t.Fatalf("UserByKeyHash error = %v", err)
		}
	}
	before := serve.cache.reads.Load()
	for range 200 {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
			t.Fatalf("UserByKeyHash(alice) error = %v", err)
		}
	}
	if got := serve.cache.reads.Load() - before; got != 0 {
		t.Errorf("200 cached lookups read auth_version %d times, want 0 while the listener is connected", got)
	}

	refusedWithin := func(what, key string) {
		t.Helper()
		start := time.Now()
		if !pollUntil(time.Second, func() bool {
			_, err := serve.UserByKeyHash(ctx, keys.Hash(key))
			return aiproxy.ErrorCode(err) == aiproxy.EUNAUTHORIZED
		}) {
			t.Errorf("%s: old key still accepted by serve 1 s after the change, want refused within 1 s", what)
			return
		}
		t.Logf("%s: refused after %v", what, time.Since(start))
	}
	newKey := cacheKey(4)
	if err := cli.ResetUserKey(ctx, "alice", keys.Hash(newKey), keys.Hint(newKey), false, nil); err != nil {
		t.Fatal(err)
	}
	refusedWithin("reset through another handle", alice)
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(newKey)); err != nil {
		t.Errorf("UserByKeyHash(new key) error = %v", err)
	}
	if err := cli.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	refusedWithin("delete through another handle", bob)

	// Through serve itself: no waiting for the notification.
	other := cacheKey(5)
	if err := serve.ResetUserKey(ctx, "carol", keys.Hash(other), keys.Hint(other), false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(carol)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("UserByKeyHash(carol's old key) right after a reset through serve error = %v, want EUNAUTHORIZED", err)
	}
}

// TestListen_DroppedListenerRevalidatesEveryLookupUntilBack: when the
// listener's connection is gone (here: terminated, and the database closed
// to new connections so that it cannot come back), every lookup reads
// auth_version again, so a reset through another handle is refused at the
// very next lookup; once the listener reconnects, lookups skip the read
// again, and a change made while it was away is seen (it LISTENs before
// the version is read again).
func TestListen_DroppedListenerRevalidatesEveryLookupUntilBack(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	serve := openServe(t, dsn, WatchOptions{Reconnect: 20 * time.Millisecond})
	cli := openPG(t, dsn)
	ctx := t.Context()
	alice, bob := cacheKey(1), cacheKey(2)
	mustCreate(t, cli, "alice", alice)
	mustCreate(t, cli, "bob", bob)
	waitLive(t, serve, true)
	for _, k := range []string{alice, bob} {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(k)); err != nil {
			t.Fatal(err)
		}
	}

	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres" // a database may not close itself to connections
	admin, err := OpenRawPostgres(u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	if _, err := admin.ExecContext(ctx, "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before admin.Close: cleanups run last first
		admin.ExecContext(context.Background(), "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS true")
	})
	if _, err := admin.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ? AND datname = ?",
		listenAppName, name); err != nil {
		t.Fatal(err)
	}
	waitLive(t, serve, false)

	before := serve.cache.reads.Load()
	for range 20 {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
			t.Fatalf("UserByKeyHash(alice) with the listener gone error = %v", err)
		}
	}
	if got := serve.cache.reads.Load() - before; got != 20 {
		t.Errorf("20 lookups with the listener gone read auth_version %d times, want 20", got)
	}
	newKey := cacheKey(3)
	if err := cli.ResetUserKey(ctx, "alice", keys.Hash(newKey), keys.Hint(newKey), false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("alice's old key at the next lookup after a reset, listener gone: error = %v, want EUNAUTHORIZED", err)
	}

	// A change while the listener is away, then it comes back.
	if err := cli.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(ctx, "ALTER DATABASE "+name+" WITH ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	waitLive(t, serve, true)
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(bob)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("bob's key, deleted while the listener was away, after it reconnected: error = %v, want EUNAUTHORIZED", err)
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(newKey)); err != nil {
		t.Fatal(err)
	}
	before = serve.cache.reads.Load()
	for range 20 {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(newKey)); err != nil {
			t.Fatal(err)
		}
	}
	if got := serve.cache.reads.Load() - before; got != 0 {
		t.Errorf("20 lookups after the listener reconnected read auth_version %d times, want 0", got)
	}
}

// TestListen_OutageServesCachedKeysForTheGraceThenRefuses: while the
// database is stopped, keys serve already looked up keep being accepted
// for the grace period (the clock is the test's), an unknown key is
// refused with EUNAVAILABLE (503), and past the grace every key is refused
// with EUNAVAILABLE; usage recorded meanwhile (usage.Recorder) is written
// once the database is back, none dropped; and lookups are served from
// memory again.
func TestListen_OutageServesCachedKeysForTheGraceThenRefuses(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	dsn := cluster.NewDatabase(t)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	serve := openServe(t, dsn, WatchOptions{Grace: time.Minute, Retry: 10 * time.Millisecond,
		Reconnect: 20 * time.Millisecond, Now: clock})
	ctx := t.Context()
	alice, stranger := cacheKey(1), cacheKey(2)
	mustCreate(t, serve, "alice", alice)
	const host = "api.example.com"
	if err := serve.AddProviderKey(ctx, ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
		Secret: "sk-upstream", KeyHash: keys.Hash("sk-upstream"), KeyHint: keys.Hint("sk-upstream")}, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitLive(t, serve, true)
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
		t.Fatal(err)
	}
	if _, err := serve.ProviderByHost(ctx, host); err != nil {
		t.Fatal(err)
	}
	// A change just before the outage: the lookup after it empties the
	// provider table, which then cannot be loaded again while the
	// database is down; the table from before the change is served.
	mustCreate(t, serve, "bob", cacheKey(3))
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
		t.Fatal(err)
	}
	rec := usage.New(serve.InsertUsage, serve.log, 1000)
	rec.Linger, rec.RetryDelay = time.Millisecond, 10*time.Millisecond

	cluster.Stop(t, "immediate")
	waitLive(t, serve, false)
	for i := range 3 { // each of the pool's connections that the stop broke, and then none
		err := serve.CreateUser(ctx, fmt.Sprintf("during%d", i), "h", "hint", time.Now(), nil)
		if aiproxy.ErrorCode(err) != aiproxy.EUNAVAILABLE {
			t.Errorf("CreateUser during the outage error = %v (code %q), want EUNAVAILABLE", err, aiproxy.ErrorCode(err))
		}
	}
	const during = 50
	for i := range during {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
			t.Fatalf("lookup %d of a cached key during the outage error = %v, want it served", i, err)
		}
		if _, err := serve.ProviderByHost(ctx, host); err != nil {
			t.Fatalf("provider lookup %d during the outage, its table emptied by a change just before: error = %v, want it served", i, err)
		}
		rec.Record(aiproxy.Usage{Time: time.Now(), UserID: 1, UserName: "alice", Provider: "p", Model: "m", Path: "/v1/x", Status: 200})
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(stranger)); aiproxy.ErrorCode(err) != aiproxy.EUNAVAILABLE {
		t.Errorf("uncached key during the outage: error = %v, want EUNAVAILABLE", err)
	}
	skew.Store(int64(time.Minute + time.Second))
	_, err := serve.UserByKeyHash(ctx, keys.Hash(alice))
	if aiproxy.ErrorCode(err) != aiproxy.EUNAVAILABLE {
		t.Errorf("cached key past the grace: error = %v, want EUNAVAILABLE", err)
	}
	if rec.Written() != 0 {
		t.Errorf("usage written while the database was stopped: %d", rec.Written())
	}

	cluster.Start(t)
	if !pollUntil(20*time.Second, func() bool {
		_, err := serve.UserByKeyHash(ctx, keys.Hash(alice))
		return err == nil
	}) {
		t.Fatalf("cached key still refused 20 s after the database came back: %v", err)
	}
	if !pollUntil(20*time.Second, func() bool { return rec.Written() == during }) {
		t.Errorf("usage written after the restart = %d, want %d", rec.Written(), during)
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := serve.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM usage").Scan(&n); err != nil || n != during {
		t.Errorf("usage rows after the restart = %d, %v; want %d", n, err, during)
	}
	if rec.Dropped() != 0 {
		t.Errorf("usage records dropped = %d, want 0", rec.Dropped())
	}
	waitLive(t, serve, true)
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
		t.Fatal(err)
	}
	before := serve.cache.reads.Load()
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
		t.Fatal(err)
	}
	if got := serve.cache.reads.Load() - before; got != 0 {
		t.Errorf("lookup after the listener reconnected read auth_version %d times, want 0", got)
	}
}

// TestListen_RevokedKeyStaysRevokedThroughAnOutage: a key deleted through
// another handle, and refused by serve, is still refused when the database
// goes away afterwards: the outage grace serves only what the cache holds
// as current, never an entry from before the change that revoked it.
func TestListen_RevokedKeyStaysRevokedThroughAnOutage(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	dsn := cluster.NewDatabase(t)
	serve := openServe(t, dsn, WatchOptions{Grace: time.Minute, Retry: 10 * time.Millisecond, Reconnect: 20 * time.Millisecond})
	cli := openPG(t, dsn)
	ctx := t.Context()
	alice, bob := cacheKey(1), cacheKey(2)
	mustCreate(t, cli, "alice", alice)
	mustCreate(t, cli, "bob", bob)
	waitLive(t, serve, true)
	for _, k := range []string{alice, bob} {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(5*time.Second, func() bool { _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); return err != nil }) {
		t.Fatal("alice's deleted key still accepted with the database up")
	}
	cluster.Stop(t, "immediate")
	waitLive(t, serve, false)
	if u, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err == nil {
		t.Errorf("alice's deleted key accepted during the outage: %s", u.Name)
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(bob)); err != nil {
		t.Errorf("bob's cached key during the outage: %v, want served within the grace", err)
	}
	cluster.Start(t)
}

// TestListen_SilentListenerVouchesForTheCacheOnlyAWhile: a listening
// connection that has shown no sign of life (no notification, no answer
// to a ping) for longer than it may vouch for the cache is not trusted:
// lookups read the change counter again, so a connection that died
// without a word cannot hide a revocation for long.
func TestListen_SilentListenerVouchesForTheCacheOnlyAWhile(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	alice := cacheKey(1)
	mustCreate(t, openPG(t, dsn), "alice", alice) // before serve listens: no notification to come
	// Quiet of a minute: no ping, so nothing is heard after the LISTEN.
	serve := openServe(t, dsn, WatchOptions{Quiet: time.Minute, Now: clock})
	ctx := t.Context()
	waitLive(t, serve, true)
	lookup := func() {
		t.Helper()
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(alice)); err != nil {
			t.Fatal(err)
		}
	}
	lookup()
	before := serve.cache.reads.Load()
	lookup()
	if got := serve.cache.reads.Load() - before; got != 0 {
		t.Fatalf("a lookup right after LISTEN read the version %d times, want 0", got)
	}
	skew.Store(int64(3 * time.Minute)) // past what the LISTEN vouches for
	lookup()
	if got := serve.cache.reads.Load() - before; got != 1 {
		t.Errorf("a lookup with the listener silent for 3 min read the version %d times, want 1", got)
	}
}

// TestListen_ServeClaimSurvivesARestart: serve's claim on the database,
// which refuses a rekey while any serve runs, is taken again when the
// listener reconnects after a PostgreSQL restart: the connection that
// held it at start is gone with the restart.
func TestListen_ServeClaimSurvivesARestart(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	dsn := cluster.NewDatabase(t)
	serve := openServe(t, dsn, WatchOptions{Retry: 10 * time.Millisecond, Reconnect: 20 * time.Millisecond})
	cli := openPG(t, dsn)
	waitLive(t, serve, true)
	if release, err := cli.pgLockServe(t.Context(), false); aiproxy.ErrorCode(err) != aiproxy.ECONFLICT {
		if release != nil {
			release()
		}
		t.Fatalf("rekey's lock with serve running: %v, want ECONFLICT", err)
	}
	cluster.Stop(t, "immediate")
	waitLive(t, serve, false)
	cluster.Start(t)
	waitLive(t, serve, true)
	var err error
	pollUntil(5*time.Second, func() bool { // the CLI's pool first finds its connections broken
		var release func()
		release, err = cli.pgLockServe(t.Context(), false)
		if release != nil {
			release()
		}
		return aiproxy.ErrorCode(err) != aiproxy.EUNAVAILABLE
	})
	if aiproxy.ErrorCode(err) != aiproxy.ECONFLICT {
		t.Errorf("rekey's lock after a restart, serve still running: %v, want ECONFLICT", err)
	}
}
