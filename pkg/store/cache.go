package store

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// maxCached bounds each cache map; past it the map starts afresh.
const maxCached = 100_000

// cache keeps the proxy's per-request lookups (user by key hash, provider
// by host) in memory. It is valid only while the auth_version counter
// (migration 0002) stays the same: triggers bump it in every transaction
// that changes users, providers or provider keys, whichever connection or
// process (the CLI, an admin route) commits it, and each lookup reads it
// with one prepared query before it answers. So a deleted or reset key is
// refused at the very next request. Commits that change none of those rows,
// such as the usage writer's every 100 ms, leave the counter and so the
// cache alone (SQLite's data_version moves on every commit).
//
// That read is a small read transaction (some microseconds); an earlier
// version skipped it by mapping SQLite's -shm file into memory, which
// saved microseconds on a path where the upstream takes seconds, at the
// price of code that depended on SQLite's file format (issue 10). On
// PostgreSQL the same read is a round trip (~75 µs), and serve's cache
// skips it while a listener tells it of every change (watch, pg_listen.go).
type cache struct {
	mu      sync.Mutex
	conn    *sql.Conn
	stmt    *sql.Stmt // reads auth_version
	version int64     // the auth_version the maps are valid for; -1: none yet
	gen     uint64    // bumped each time the maps are emptied

	users map[string]aiproxy.User
	// providers holds the whole provider table under the key "" (a map so
	// that lookup serves it): a name that is no provider is answered from
	// it, so garbage /{host}/ paths neither query nor fill memory.
	providers map[string]*providerTable
	// Loads in flight, by key: a request that misses while another one
	// loads the same key waits for that load instead of querying too, so a
	// commit that empties the cache under load costs one query per key,
	// not one per request.
	userLoads     map[string]*load[aiproxy.User]
	providerLoads map[string]*load[*providerTable]

	// used holds the user keys looked up since the last change; after a
	// change, refreshStmt reloads the cached ones among them in one query
	// instead of letting each request that misses reload its own.
	used        map[string]struct{}
	refreshStmt *sql.Stmt // nil: empty the user map instead

	// reads counts the auth_version reads, for the tests that prove a
	// watched cache skips them.
	reads atomic.Int64

	// A watched cache (PostgreSQL's serve: pg_listen.go) skips the
	// auth_version read while its listener is connected and no
	// notification came since the last read, and outlives an outage of
	// the database by grace. An unwatched one (SQLite, the CLI) reads the
	// counter before every lookup, as above.
	watch
}

// watch is the state a PostgreSQL listener keeps for its cache.
//
// Why notes is a counter and not a flag: a lookup reads notes before it
// reads the version and records that value as synced afterwards, so a
// notification that arrives while the read is in flight leaves synced
// behind notes, and the next lookup reads again, never the other way.
type watch struct {
	watched bool // set once, before the listener starts
	// live is set while the listener's connection is up and LISTENing;
	// notes is bumped by each notification, each (re)connection and each
	// commit through this handle.
	live  atomic.Bool
	notes atomic.Uint64
	// heardAt is when the listener's connection last showed it is alive
	// (Unix ns, by now); freshFor how long that vouches for the cache.
	heardAt  atomic.Int64
	freshFor time.Duration

	// The rest is guarded by cache.mu.
	synced  uint64    // notes as of the last auth_version read
	okAt    time.Time // when the cache was last known to be current
	failing bool      // the last auth_version read failed: outage mode
	triedAt time.Time // when it last failed
	probing bool      // a lookup is reading the version, unlocked, in outage mode
	// prevProviders is the provider table as it was before the last
	// reset, until a table is loaded again, for fallback only. There is no
	// such thing for users: the change that emptied the cache may be the
	// revocation of the very key that would be served from it.
	prevProviders map[string]*providerTable

	grace   time.Duration // how long cached entries outlive an outage
	retry   time.Duration // in outage mode, the least time between two reads
	timeout time.Duration // the longest a version read may take before it counts as failed
	now     func() time.Time
	log     *slog.Logger
	name    string // the database, for errors and logs (RedactDSN)
}

// refreshBatch is how many users one refresh query reloads, and
// maxRefresh the most users a refresh reloads (beyond, the map empties).
const (
	refreshBatch = 64
	maxRefresh   = 16 * refreshBatch
)

// load is one lookup in flight; done is closed when v and err are set.
type load[T any] struct {
	done chan struct{}
	v    T
	err  error
}

// newCache makes the cache of db. With pin its statements run on one
// connection of their own (SQLite: a read of a few microseconds, never
// queued behind the pool); without, on the pool (PostgreSQL: a connection
// that a server restart broke is replaced, not kept).
func newCache(ctx context.Context, db *sql.DB, pin bool) (*cache, error) {
	var conn *sql.Conn
	var prep interface {
		PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	} = db
	if pin {
		var err error
		if conn, err = db.Conn(ctx); err != nil {
			return nil, err
		}
		prep = conn
	}
	stmt, err := prep.PrepareContext(ctx, "SELECT v FROM auth_version WHERE id = 1")
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	c := &cache{conn: conn, stmt: stmt, version: -1, used: map[string]struct{}{}}
	c.now = time.Now
	c.log = slog.New(slog.DiscardHandler)
	// The same columns and scanner as userByKeyHash, for refreshBatch keys.
	q := "SELECT key_hash, " + userColumns + " FROM users WHERE key_hash IN (?" +
		strings.Repeat(", ?", refreshBatch-1) + ")"
	if c.refreshStmt, err = prep.PrepareContext(ctx, q); err != nil {
		c.refreshStmt = nil // refresh by emptying, as before
	}
	c.mu.Lock()
	err = c.sync(ctx)
	c.mu.Unlock()
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// close releases the pinned connection.
func (c *cache) close() {
	if c.refreshStmt != nil {
		c.refreshStmt.Close()
	}
	c.stmt.Close()
	if c.conn != nil {
		c.conn.Close()
	}
}

// syncScoped is sync, once per aiproxy.LookupScope: the later lookups of a
// request trust the check its first one made. The caller holds c.mu.
func (c *cache) syncScoped(ctx context.Context) error {
	sc := aiproxy.LookupScopeOf(ctx)
	if sc.Checked() {
		return nil
	}
	if err := c.sync(ctx); err != nil {
		return err
	}
	sc.MarkChecked()
	return nil
}

// sync brings the cache up to date if users, providers or provider keys
// changed since the last call. The caller holds c.mu.
func (c *cache) sync(ctx context.Context) error {
	if c.watched {
		return c.syncWatched(ctx)
	}
	return c.readVersion(ctx, 0)
}

// readVersion reads auth_version and, if it moved, refreshes the cache;
// seen is the notes count read before it. The caller holds c.mu.
func (c *cache) readVersion(ctx context.Context, seen uint64) error {
	// A missing row is an error, never a cache kept forever.
	c.reads.Add(1)
	var v int64
	if err := c.stmt.QueryRowContext(ctx).Scan(&v); err != nil {
		return err
	}
	c.apply(ctx, v)
	if c.watched {
		c.synced = seen
		c.okAt = c.now()
	}
	return nil
}

// apply takes v as the current auth_version. The caller holds c.mu.
func (c *cache) apply(ctx context.Context, v int64) {
	if v != c.version {
		first := c.version < 0
		c.version = v
		if first {
			c.reset()
		} else {
			c.refresh(ctx)
		}
	}
}

// syncWatched is sync for a cache that a listener keeps (PostgreSQL's
// serve). While the listener is connected and nothing was notified since
// the last read, the cache is current: no query. Otherwise it reads the
// version, as an unwatched cache does on every lookup. When that read
// fails (the database is down or unreachable), the cache goes on serving
// what it holds for c.grace from when it was last known current, reading
// again at most every c.retry, by one lookup at a time and without
// holding c.mu, so that requests are not queued behind a read that hangs;
// past c.grace every lookup is refused (EUNAVAILABLE) until a read
// succeeds. The caller holds c.mu.
func (c *cache) syncWatched(ctx context.Context) error {
	live := c.live.Load() // before notes: see listening
	seen := c.notes.Load()
	if live && seen == c.synced && c.fresh() {
		return nil
	}
	if !c.failing {
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		err := c.readVersion(rctx, seen)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err // done, or the caller left: not an outage
		}
		now := c.now()
		if live {
			c.okAt = now // the listener was connected until now
		}
		c.failing, c.triedAt = true, now
		c.log.Warn("database unreachable: serving cached keys", "db", c.name, "err", err,
			"for", c.grace.String(), "since", c.okAt.UTC().Format(time.RFC3339))
		return c.stale()
	}
	if !c.probing && c.now().Sub(c.triedAt) >= c.retry {
		c.probing = true
		c.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		c.reads.Add(1)
		var v int64
		err := c.stmt.QueryRowContext(rctx).Scan(&v)
		cancel()
		c.mu.Lock()
		c.probing = false
		c.triedAt = c.now()
		if err == nil && c.failing {
			c.failing = false
			c.apply(ctx, v)
			c.synced, c.okAt = seen, c.now()
			c.log.Info("database reachable again: cache revalidated", "db", c.name)
			return nil
		}
		if !c.failing {
			return nil // the listener reconnected meanwhile; the next lookup reads
		}
	}
	return c.stale()
}

// stale answers a lookup in outage mode: nil (serve the cache) within
// c.grace of the last time the cache was known current, EUNAVAILABLE past
// it. The caller holds c.mu.
func (c *cache) stale() error {
	if c.now().Sub(c.okAt) <= c.grace {
		return nil
	}
	// Any caller may read this, before its key is checked: the database's
	// name and address go only to the log.
	return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "aiproxy's database is unreachable: keys could not be checked since %s, longer than the %s that known keys are served",
		c.okAt.UTC().Format(time.RFC3339), c.grace)
}

// refresh brings the cache up to date after a change: the users looked up
// since the last change are reloaded, all in one query per refreshBatch;
// one whose key is gone (deleted, reset) drops out; everything else is
// emptied, as by reset. A change is most often to one user or provider:
// without refresh, it would make every active user's next request reload
// it, on its critical path. The caller holds c.mu.
func (c *cache) refresh(ctx context.Context) {
	var keys []string
	for k := range c.used {
		if _, ok := c.users[k]; ok {
			keys = append(keys, k)
		}
	}
	c.reset()
	if len(keys) == 0 || len(keys) > maxRefresh || c.refreshStmt == nil {
		return
	}
	fresh, err := c.reload(ctx, keys)
	if err != nil {
		return // emptied: each lookup loads again
	}
	c.users = fresh
}

// reload reads the users holding keys, in queries of refreshBatch keys.
func (c *cache) reload(ctx context.Context, keys []string) (map[string]aiproxy.User, error) {
	fresh := make(map[string]aiproxy.User, len(keys))
	args := make([]any, refreshBatch)
	for lo := 0; lo < len(keys); lo += refreshBatch {
		for i := range args {
			args[i] = "" // no key hashes to ""
			if lo+i < len(keys) {
				args[i] = keys[lo+i]
			}
		}
		rows, err := c.refreshStmt.QueryContext(ctx, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var hash string
			u, err := scanUser(hashScanner{rows, &hash})
			if err != nil {
				rows.Close()
				return nil, err
			}
			fresh[hash] = u
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return fresh, nil
}

// hashScanner scans a refresh row: the key hash, then the columns scanUser
// reads.
type hashScanner struct {
	rows *sql.Rows
	hash *string
}

func (h hashScanner) Scan(dest ...any) error {
	return h.rows.Scan(append([]any{h.hash}, dest...)...)
}

// reset empties both maps, and forgets the loads in flight: they began
// before the change that this reset is for.
func (c *cache) reset() {
	c.gen++
	if c.watched && len(c.providers) > 0 {
		c.prevProviders = c.providers
	}
	c.users = map[string]aiproxy.User{}
	c.providers = map[string]*providerTable{}
	c.userLoads = map[string]*load[aiproxy.User]{}
	c.providerLoads = map[string]*load[*providerTable]{}
	c.used = map[string]struct{}{}
}

// lookup returns m[key], synced, or the result of fn, run once for all the
// callers that miss on key at the same time. The caller holds c.mu, which
// lookup releases. An answer is kept in m only if the cache was not
// emptied while fn ran. A caller that joined a load which failed because
// its starter's context ended loads again itself.
//
// fn runs without the lock, so that misses on different keys (many, after a
// commit emptied the cache) do not queue behind each other. An answer that a
// commit made stale while it loaded is never served: every lookup syncs
// first, and that commit empties the cache and its loads in flight.
func lookup[T any](ctx context.Context, c *cache, m map[string]T, loads map[string]*load[T], key string,
	keep func(T, error) bool, fn func() (T, error)) (T, error) {
	if v, ok := m[key]; ok {
		c.mu.Unlock()
		return v, nil
	}
	if l, ok := loads[key]; ok {
		c.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
		if l.err == nil || !isContextErr(l.err) || ctx.Err() != nil {
			return l.v, l.err
		}
		return fn() // the starter left; this caller did not
	}
	l := &load[T]{done: make(chan struct{}), err: errLoadFailed}
	loads[key] = l
	gen := c.gen
	c.mu.Unlock()
	defer func() {
		// Also when fn panics: the callers waiting get errLoadFailed.
		c.mu.Lock()
		if c.gen == gen {
			if l.err == nil && keep(l.v, l.err) {
				if len(m) >= maxCached {
					c.reset()
				} else {
					m[key] = l.v
				}
			}
			delete(loads, key)
		}
		c.mu.Unlock()
		close(l.done)
	}()
	v, err := fn()
	l.v, l.err = v, err
	return v, err
}

// errLoadFailed is what callers waiting on a load get if it panicked.
var errLoadFailed = errors.New("cache: lookup failed")

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// user returns the cached user for keyHash, loading it with load on a miss.
// Unknown keys are not cached, so garbage keys cannot fill memory.
func (c *cache) user(ctx context.Context, keyHash string, load func() (aiproxy.User, error)) (aiproxy.User, error) {
	c.mu.Lock()
	if err := c.syncScoped(ctx); err != nil {
		c.mu.Unlock()
		return aiproxy.User{}, err
	}
	if len(c.used) <= maxRefresh {
		c.used[keyHash] = struct{}{}
	}
	return lookup(ctx, c, c.users, c.userLoads, keyHash,
		func(_ aiproxy.User, err error) bool { return err == nil }, load)
}

// fallback returns the entry for key that the cache held before the last
// change (prev, under c.mu), for a lookup whose load failed because the
// database cannot be reached, while a watched cache still serves what it
// holds (syncWatched): a change to one provider committed just before an
// outage must not turn away every request, when the users it did not
// touch are served. Never otherwise: with the database up, a load answers.
func fallback[T any](c *cache, prev func() map[string]T, key string, err error) (T, bool) {
	var zero T
	if aiproxy.ErrorCode(dbError(err)) != aiproxy.EUNAVAILABLE {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.watched || c.stale() != nil {
		return zero, false
	}
	v, ok := prev()[key]
	return v, ok
}

// providerTable returns the cached provider table (hosts, aliases, keys),
// loading it with load after each change, once for all the callers that
// miss at the same time.
func (c *cache) providerTable(ctx context.Context, load func() (*providerTable, error)) (*providerTable, error) {
	c.mu.Lock()
	if err := c.syncScoped(ctx); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	t, err := lookup(ctx, c, c.providers, c.providerLoads, "",
		func(_ *providerTable, err error) bool { return err == nil }, load)
	if err != nil {
		if prev, ok := fallback(c, func() map[string]*providerTable { return c.prevProviders }, "", err); ok {
			return prev, nil
		}
		return t, err
	}
	c.mu.Lock()
	c.prevProviders = nil // loaded since the change: never fall back to older
	c.mu.Unlock()
	return t, nil
}
