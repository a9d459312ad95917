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
// refused at the very next request, and lookups cost a map read plus one
// cheap pragma instead of a query.
type cache struct {
	mu        sync.Mutex
	conn      *sql.Conn
	stmt      *sql.Stmt
	version   int64
	users     map[string]aiproxy.User
	providers map[string]aiproxy.Provider
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
	return &cache{conn: conn, stmt: stmt, version: -1}, nil
}

func (c *cache) close() {
	c.stmt.Close()
	c.conn.Close()
}

// sync empties the cache if the database changed since the last call.
// The caller holds c.mu.
func (c *cache) sync(ctx context.Context) error {
	var v int64
	if err := c.stmt.QueryRowContext(ctx).Scan(&v); err != nil {
		return err
	}
	if v != c.version || len(c.users) > maxCached || len(c.providers) > maxCached {
		c.version = v
		c.users = map[string]aiproxy.User{}
		c.providers = map[string]aiproxy.Provider{}
	}
	return nil
}

// user returns the cached user for keyHash, loading it with load on a miss.
// Unknown keys are not cached, so garbage keys cannot fill memory.
func (c *cache) user(ctx context.Context, keyHash string, load func() (aiproxy.User, error)) (aiproxy.User, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sync(ctx); err != nil {
		return aiproxy.User{}, err
	}
	if u, ok := c.users[keyHash]; ok {
		return u, nil
	}
	u, err := load()
	if err == nil {
		c.users[keyHash] = u
	}
	return u, err
}

// provider is user's twin for providers by host.
func (c *cache) provider(ctx context.Context, host string, load func() (aiproxy.Provider, error)) (aiproxy.Provider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sync(ctx); err != nil {
		return aiproxy.Provider{}, err
	}
	if p, ok := c.providers[host]; ok {
		return p, nil
	}
	p, err := load()
	if err == nil {
		c.providers[host] = p
	}
	return p, err
}
