package store

import (
	"context"
	"database/sql"
	"sync"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// maxCached bounds each cache map; past it the map starts afresh.
const maxCached = 100_000

// cache keeps the proxy's per-request lookups (user by key hash, provider
// by host) in memory. It is valid only while SQLite's data_version, read on
// one pinned connection, stays the same: any commit by another connection
// or process (the CLI, an admin route, the usage writer) changes it, and
// the next lookup starts from an empty cache. So a deleted or reset key is
// refused at the very next request.
//
// Reading data_version is itself a read transaction: on a WAL database it
// takes and drops a read lock on the -shm file (fcntl system calls), about
// 8–15 µs, twice per proxied request. So each lookup first compares the
// WAL-index header, which every commit rewrites, with the copy taken at the
// last check (memory-mapped, no system call: see cache_wal_unix.go), and
// reads data_version only when the header moved. A lookup then costs a
// map read and a 48-byte compare.
type cache struct {
	mu      sync.Mutex
	conn    *sql.Conn
	stmt    *sql.Stmt
	version int64
	gen     uint64 // bumped each time the maps are emptied

	users     map[string]aiproxy.User
	providers map[string]providerEntry

	wal  *walIndex // nil: read data_version on every lookup
	seen walHeader // the WAL-index header when data_version was last read
}

// providerEntry is a cached provider, or the fact that a host is not one
// (a garbage /{host}/ path or a fallback provider must not cost a query).
type providerEntry struct {
	p       aiproxy.Provider
	missing bool
}

func newCache(ctx context.Context, db *sql.DB) (*cache, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	stmt, err := conn.PrepareContext(ctx, "PRAGMA data_version")
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &cache{conn: conn, stmt: stmt, version: -1}
	// The fast path needs a WAL database with a -shm file: this connection
	// keeps it open (and so unshrunk) until close.
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err == nil && mode == "wal" {
		if path, err := mainFile(ctx, conn); err == nil && path != "" {
			c.wal, _ = openWALIndex(path + "-shm") // on error, c.wal may hold the file, unmapped
		}
	}
	c.mu.Lock()
	err = c.sync(ctx)
	c.mu.Unlock()
	if err != nil {
		c.close()
		return c, err // the caller closes the database, then c.closeFile
	}
	return c, nil
}

// mainFile is the path of the connection's main database file.
func mainFile(ctx context.Context, conn *sql.Conn) (string, error) {
	rows, err := conn.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name, file string
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return "", err
		}
		if name == "main" {
			return file, nil
		}
	}
	return "", rows.Err()
}

// close releases the pinned connection. The -shm descriptor stays open
// for closeFile, after the last SQLite connection is gone.
func (c *cache) close() {
	c.stmt.Close()
	c.conn.Close()
}

// closeFile closes the -shm descriptor; see walIndex.
func (c *cache) closeFile() {
	if c.wal != nil {
		c.wal.closeFile()
		c.wal = nil
	}
}

// sync empties the cache if the database changed since the last call.
// The caller holds c.mu.
func (c *cache) sync(ctx context.Context) error {
	var hdr walHeader
	if c.wal != nil {
		if !c.wal.read(&hdr) {
			c.wal.unmap() // the mapping failed: fall back to data_version alone
		} else if c.version >= 0 && hdr == c.seen {
			return nil // nothing was committed since data_version was read
		}
	}
	// The header was read before data_version, so a commit that lands
	// between the two moves the header again and is checked next time.
	var v int64
	if err := c.stmt.QueryRowContext(ctx).Scan(&v); err != nil {
		return err
	}
	if v != c.version {
		c.version = v
		c.reset()
	}
	c.seen = hdr
	return nil
}

// reset empties both maps.
func (c *cache) reset() {
	c.gen++
	c.users = map[string]aiproxy.User{}
	c.providers = map[string]providerEntry{}
}

// user returns the cached user for keyHash, loading it with load on a miss.
// Unknown keys are not cached, so garbage keys cannot fill memory.
//
// load runs without the lock, so that misses (many at once, after a commit
// emptied the cache) do not queue behind each other; its answer is kept
// only if the cache was not emptied meanwhile. An answer that a commit made
// stale while it loaded is never served: every lookup syncs first, and that
// commit empties the cache.
func (c *cache) user(ctx context.Context, keyHash string, load func() (aiproxy.User, error)) (aiproxy.User, error) {
	c.mu.Lock()
	if err := c.sync(ctx); err != nil {
		c.mu.Unlock()
		return aiproxy.User{}, err
	}
	if u, ok := c.users[keyHash]; ok {
		c.mu.Unlock()
		return u, nil
	}
	gen := c.gen
	c.mu.Unlock()

	u, err := load()
	if err == nil {
		c.mu.Lock()
		if c.gen == gen {
			if len(c.users) >= maxCached {
				c.reset()
			}
			c.users[keyHash] = u
		}
		c.mu.Unlock()
	}
	return u, err
}

// provider is user's twin for providers by host; a host that is not
// registered (ENOTFOUND) is remembered too, until the next change.
func (c *cache) provider(ctx context.Context, host string, load func() (aiproxy.Provider, error)) (aiproxy.Provider, error) {
	c.mu.Lock()
	if err := c.sync(ctx); err != nil {
		c.mu.Unlock()
		return aiproxy.Provider{}, err
	}
	if e, ok := c.providers[host]; ok {
		c.mu.Unlock()
		if e.missing {
			return aiproxy.Provider{}, aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host)
		}
		return e.p, nil
	}
	gen := c.gen
	c.mu.Unlock()

	p, err := load()
	missing := aiproxy.ErrorCode(err) == aiproxy.ENOTFOUND
	if err == nil || missing {
		c.mu.Lock()
		if c.gen == gen {
			if len(c.providers) >= maxCached {
				c.reset()
			}
			c.providers[host] = providerEntry{p: p, missing: missing}
		}
		c.mu.Unlock()
	}
	return p, err
}
