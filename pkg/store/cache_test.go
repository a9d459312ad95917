package store

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

// openPair opens one database file twice: serve and an admin command.
func openPair(t testing.TB) (serve, cli *DB) {
	t.Helper()
	path, opts := testLocation(t, filepath.Join(t.TempDir(), "aiproxy.db"))
	var err error
	if serve, err = Open(t.Context(), path, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Close() })
	if cli, err = Open(t.Context(), path, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return serve, cli
}

func cacheKey(i int) string { return fmt.Sprintf("sk-cfw%045d", i) }

// TestCache_SeesOtherHandlesAtOnce: whatever another handle (the CLI, in
// another process) commits is seen by the very next lookup, with the
// entries cached before it.
func TestCache_SeesOtherHandlesAtOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serve, cli := openPair(t)
	const host = "api.example.com"

	// An unknown provider is remembered as unknown, until it is added.
	if _, err := serve.ProviderByHost(ctx, host); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Fatalf("ProviderByHost(unknown) error = %v, want ENOTFOUND", err)
	}
	add := func(secret string) {
		t.Helper()
		err := cli.AddProviderKey(ctx, ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
			Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	add("sk-upstream-1")
	if p, err := serve.ProviderByHost(ctx, host); err != nil || len(p.Keys) != 1 {
		t.Fatalf("ProviderByHost after add = %v, %v; want 1 key", p.Keys, err)
	}
	add("sk-upstream-2")
	if p, err := serve.ProviderByHost(ctx, host); err != nil || len(p.Keys) != 2 {
		t.Fatalf("ProviderByHost after second add = %v, %v; want 2 keys", p.Keys, err)
	}
	if err := cli.RemoveProvider(ctx, host); err != nil {
		t.Fatal(err)
	}
	if _, err := serve.ProviderByHost(ctx, host); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Fatalf("ProviderByHost after remove error = %v, want ENOTFOUND", err)
	}

	old := cacheKey(0)
	if err := cli.CreateUser(ctx, "alice", keys.Hash(old), keys.Hint(old), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(old)); err != nil {
			t.Fatalf("round %d: UserByKeyHash(current key) error = %v", i, err)
		}
		// A usage write through serve's own pool is a commit, but not an auth change.
		if err := serve.InsertUsage(ctx, []aiproxy.Usage{{Time: time.Now(), UserName: "alice", Provider: host, Path: "/v1"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(old)); err != nil {
			t.Fatalf("round %d: UserByKeyHash after a usage write error = %v", i, err)
		}
		next := cacheKey(i)
		if err := cli.ResetUserKey(ctx, "alice", keys.Hash(next), keys.Hint(next), false, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(old)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
			t.Fatalf("round %d: UserByKeyHash(reset key) error = %v, want EUNAUTHORIZED", i, err)
		}
		old = next
	}
	if err := cli.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(old)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Fatalf("UserByKeyHash(deleted user) error = %v, want EUNAUTHORIZED", err)
	}
}

// TestCache_ConcurrentResets: while lookups run on many goroutines, a key
// reset elsewhere is refused by every lookup that starts after the reset
// returned.
func TestCache_ConcurrentResets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	serve, cli := openPair(t)
	cur := cacheKey(0)
	if err := cli.CreateUser(ctx, "bob", keys.Hash(cur), keys.Hint(cur), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	// dead holds the hash of the newest key known to be reset.
	var dead atomic.Pointer[string]
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				d := dead.Load()
				if d == nil {
					runtime.Gosched()
					continue
				}
				if _, err := serve.UserByKeyHash(ctx, *d); err == nil {
					wrong.Add(1)
				}
			}
		}()
	}
	for i := 1; i <= 30; i++ {
		next := cacheKey(i)
		// Load the current key into serve's cache, then reset it.
		if _, err := serve.UserByKeyHash(ctx, keys.Hash(cur)); err != nil {
			t.Fatal(err)
		}
		if err := cli.ResetUserKey(ctx, "bob", keys.Hash(next), keys.Hint(next), false, nil); err != nil {
			t.Fatal(err)
		}
		h := keys.Hash(cur)
		dead.Store(&h)
		time.Sleep(2 * time.Millisecond)
		cur = next
	}
	cancel()
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d lookups accepted a key after its reset returned", n)
	}
}

// TestCache_SharedLoads: lookups that miss on one key at the same time
// share one load; a caller whose shared load failed only because its
// starter left loads again; a panicking load fails its waiters.
func TestCache_SharedLoads(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serve, _ := openPair(t)
	c := serve.cache
	var calls atomic.Int64
	release := make(chan struct{})
	slow := func() (aiproxy.User, error) {
		calls.Add(1)
		<-release
		return aiproxy.User{ID: 7, Name: "carol"}, nil
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if u, err := c.user(ctx, "k1", slow); err != nil || u.ID != 7 {
				t.Errorf("user(k1) = %+v, %v; want carol", u, err)
			}
		}()
	}
	for calls.Load() == 0 {
		runtime.Gosched()
	}
	time.Sleep(20 * time.Millisecond) // let the others join
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("20 concurrent misses made %d loads, want 1", n)
	}

	// The starter's context ends: a joiner with a live context loads itself.
	startCtx, cancelStart := context.WithCancel(ctx)
	started := make(chan struct{})
	go c.user(startCtx, "k2", func() (aiproxy.User, error) {
		close(started)
		<-startCtx.Done()
		return aiproxy.User{}, startCtx.Err()
	})
	<-started
	done := make(chan error, 1)
	go func() {
		u, err := c.user(ctx, "k2", func() (aiproxy.User, error) { return aiproxy.User{ID: 8}, nil })
		if err == nil && u.ID != 8 {
			err = fmt.Errorf("user = %+v", u)
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancelStart()
	if err := <-done; err != nil {
		t.Errorf("joiner of a load whose starter left: %v, want its own answer", err)
	}

	// A load that panics: its waiter gets an error, never a zero user.
	entered := make(chan struct{})
	go func() {
		defer func() { recover() }()
		c.user(ctx, "k3", func() (aiproxy.User, error) {
			close(entered)
			time.Sleep(200 * time.Millisecond) // the waiter joins meanwhile
			panic("boom")
		})
	}()
	<-entered
	if _, err := c.user(ctx, "k3", func() (aiproxy.User, error) { return aiproxy.User{ID: 9}, nil }); err == nil {
		t.Error("waiter of a panicked load got no error")
	}
}

// TestCache_RefreshAfterUnrelatedCommit: a commit that changes no user
// (the usage writer's) reloads the users in use in one query, so their next
// lookups load nothing; a change to a user (expiry, here) is in that reload.
func TestCache_RefreshAfterUnrelatedCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serve, cli := openPair(t)
	key := cacheKey(1)
	if err := cli.CreateUser(ctx, "dave", keys.Hash(key), keys.Hint(key), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	var loads atomic.Int64
	lookup := func() (aiproxy.User, error) {
		return serve.cache.user(ctx, keys.Hash(key), func() (aiproxy.User, error) {
			loads.Add(1)
			return serve.userByKeyHash(ctx, keys.Hash(key))
		})
	}
	if _, err := lookup(); err != nil || loads.Load() != 1 {
		t.Fatalf("first lookup: %v, %d loads; want 1", err, loads.Load())
	}
	for i := range 5 {
		if err := serve.InsertUsage(ctx, []aiproxy.Usage{{Time: time.Now(), UserName: "dave", Provider: "p", Path: "/v1"}}); err != nil {
			t.Fatal(err)
		}
		if u, err := lookup(); err != nil || u.Name != "dave" {
			t.Fatalf("lookup after usage write %d = %+v, %v", i, u, err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("%d loads after 5 usage writes, want 1: the refresh should have reloaded dave", n)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := cli.SetUserExpiry(ctx, "dave", &exp); err != nil {
		t.Fatal(err)
	}
	u, err := lookup()
	if err != nil || u.ExpiresAt == nil || !u.ExpiresAt.Equal(exp) {
		t.Errorf("lookup after SetUserExpiry elsewhere = %+v, %v; want expiry %v", u, err, exp)
	}
	if err := cli.DeleteUser(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("lookup after delete elsewhere error = %v, want EUNAUTHORIZED", err)
	}
}

// TestCache_UsageWritesKeepTheCache: usage records, committed through
// serve's own pool or another handle, change no user or provider, so they
// neither empty nor refresh the cache; a change to a user or a provider
// made through another handle in between is still seen by the very next
// lookup.
func TestCache_UsageWritesKeepTheCache(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	serve, cli := openPair(t)
	const host = "api.example.com"
	addKey := func(secret string) {
		t.Helper()
		err := cli.AddProviderKey(ctx, ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
			Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	addKey("sk-upstream-1")
	key := cacheKey(1)
	if err := cli.CreateUser(ctx, "erin", keys.Hash(key), keys.Hint(key), time.Now(), nil); err != nil {
		t.Fatal(err)
	}

	var loads atomic.Int64
	provider := func() (aiproxy.Provider, error) {
		tab, err := serve.cache.providerTable(ctx, func() (*providerTable, error) {
			loads.Add(1)
			return serve.loadProviderTable(ctx)
		})
		if err != nil {
			return aiproxy.Provider{}, err
		}
		if p, ok, err := tab.find(host); ok {
			return p, err
		}
		return aiproxy.Provider{}, aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", host)
	}
	gen := func() uint64 {
		serve.cache.mu.Lock()
		defer serve.cache.mu.Unlock()
		return serve.cache.gen
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(key)); err != nil {
		t.Fatal(err)
	}
	if p, err := provider(); err != nil || len(p.Keys) != 1 {
		t.Fatalf("provider(%s) = %v, %v; want 1 key", host, p.Keys, err)
	}
	start := gen()
	for i := range 10 {
		w := cli
		if i%2 == 1 {
			w = serve
		}
		if err := w.InsertUsage(ctx, []aiproxy.Usage{{Time: time.Now(), UserName: "erin", Provider: host, Path: "/v1"}}); err != nil {
			t.Fatal(err)
		}
		if u, err := serve.UserByKeyHash(ctx, keys.Hash(key)); err != nil || u.Name != "erin" {
			t.Fatalf("UserByKeyHash after usage write %d = %+v, %v; want erin", i, u, err)
		}
		if _, err := provider(); err != nil {
			t.Fatalf("provider(%s) after usage write %d error = %v", host, i, err)
		}
	}
	if got := gen() - start; got != 0 {
		t.Errorf("10 usage writes emptied or refreshed the cache %d times, want 0", got)
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("provider loaded %d times across 10 usage writes, want 1", n)
	}

	next := cacheKey(2)
	if err := cli.ResetUserKey(ctx, "erin", keys.Hash(next), keys.Hint(next), false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := serve.UserByKeyHash(ctx, keys.Hash(key)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("UserByKeyHash(reset key) error = %v, want EUNAUTHORIZED", err)
	}
	if u, err := serve.UserByKeyHash(ctx, keys.Hash(next)); err != nil || u.Name != "erin" {
		t.Errorf("UserByKeyHash(new key) = %+v, %v; want erin", u, err)
	}
	addKey("sk-upstream-2")
	if p, err := provider(); err != nil || len(p.Keys) != 2 {
		t.Errorf("provider(%s) after a key added elsewhere = %v, %v; want 2 keys", host, p.Keys, err)
	}
}

// TestAuthVersion: every write that can change what the proxy
// authenticates with bumps auth_version in its own transaction; a usage
// record and a failed write do not.
func TestAuthVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, _ := openPair(t)
	version := func() int64 {
		t.Helper()
		var v int64
		if err := d.sql.QueryRowContext(ctx, "SELECT v FROM auth_version WHERE id = 1").Scan(&v); err != nil {
			t.Fatalf("read auth_version: %v", err)
		}
		return v
	}
	const host = "api.example.com"
	k1, k2, k3 := cacheKey(1), cacheKey(2), cacheKey(3)
	addKey := func(secret string) error {
		return d.AddProviderKey(ctx, ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
			Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, time.Now())
	}
	exp := time.Now().Add(time.Hour)
	tests := []struct {
		name  string
		write func() error
		bump  bool
	}{
		{"CreateUser", func() error { return d.CreateUser(ctx, "frank", keys.Hash(k1), keys.Hint(k1), time.Now(), nil) }, true},
		{"CreateUser taken name", func() error { return d.CreateUser(ctx, "frank", keys.Hash(k2), keys.Hint(k2), time.Now(), nil) }, false},
		{"InsertUsage", func() error {
			return d.InsertUsage(ctx, []aiproxy.Usage{{Time: time.Now(), UserName: "frank", Provider: host, Path: "/v1"}})
		}, false},
		{"ResetUserKey", func() error { return d.ResetUserKey(ctx, "frank", keys.Hash(k2), keys.Hint(k2), false, nil) }, true},
		{"ResetUserKey missing user", func() error { return d.ResetUserKey(ctx, "nobody", keys.Hash(k3), keys.Hint(k3), false, nil) }, false},
		{"ReplaceUserKey", func() error {
			_, err := d.ReplaceUserKey(ctx, keys.Hash(k2), keys.Hash(k3), keys.Hint(k3))
			return err
		}, true},
		{"SetUserExpiry", func() error { return d.SetUserExpiry(ctx, "frank", &exp) }, true},
		{"DeleteUser", func() error { return d.DeleteUser(ctx, "frank") }, true},
		{"AddProviderKey new host", func() error { return addKey("sk-upstream-1") }, true},
		{"AddProviderKey same key", func() error { return addKey("sk-upstream-1") }, false},
		{"AddProviderKey second key", func() error { return addKey("sk-upstream-2") }, true},
		{"SetProviderInjectUsage", func() error { return d.SetProviderInjectUsage(ctx, host, false) }, true},
		{"RemoveProviderKey", func() error { return d.RemoveProviderKey(ctx, host, keys.Hash("sk-upstream-2")) }, true},
		{"RemoveProvider", func() error { return d.RemoveProvider(ctx, host) }, true},
		{"RemoveProvider unknown host", func() error { return d.RemoveProvider(ctx, host) }, false},
	}
	// Not parallel: each case starts from the state the one before left.
	for _, tc := range tests {
		before := version()
		err := tc.write()
		if tc.bump && err != nil {
			t.Fatalf("%s error = %v", tc.name, err)
		}
		if got := version() != before; got != tc.bump {
			t.Errorf("%s (error %v): auth_version moved = %v, want %v", tc.name, err, got, tc.bump)
		}
	}
}

// TestCache_OneCheckPerLookupScope: the lookups of one request (a scope)
// read the change counter once, with its first lookup; they are answered
// as of that moment. The next request's first lookup sees a change
// committed meanwhile.
func TestCache_OneCheckPerLookupScope(t *testing.T) {
	t.Parallel()
	serve, cli := openPair(t)
	ctx := t.Context()
	const host = "api.example.com"
	secret := "sk-upstream-1"
	if err := cli.AddProviderKey(ctx, ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
		Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, time.Now()); err != nil {
		t.Fatal(err)
	}
	alice := cacheKey(1)
	if err := cli.CreateUser(ctx, "alice", keys.Hash(alice), keys.Hint(alice), time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	request := func() (aiproxy.User, error) {
		t.Helper()
		rctx := aiproxy.WithLookupScope(ctx)
		u, err := serve.UserByKeyHash(rctx, keys.Hash(alice))
		if err != nil {
			return u, err
		}
		before := serve.cache.reads.Load()
		for range 3 { // the provider, and model routing's prefixes
			if _, err := serve.ProviderByHost(rctx, host); err != nil {
				t.Fatal(err)
			}
			if _, _, err := serve.FindProvider(rctx, "groq"); err != nil {
				t.Fatal(err)
			}
		}
		if got := serve.cache.reads.Load() - before; got != 0 {
			t.Errorf("the request's later lookups read the change counter %d times, want 0 (its first lookup did)", got)
		}
		return u, nil
	}
	before := serve.cache.reads.Load()
	if _, err := request(); err != nil {
		t.Fatal(err)
	}
	if got := serve.cache.reads.Load() - before; got != 1 && !serve.pg {
		t.Errorf("one request read the change counter %d times, want 1", got)
	}
	if err := cli.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if serve.pg {
		return // the listener's notification decides when; TestListen_* cover it
	}
	if _, err := request(); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("the next request after alice was deleted: %v, want EUNAUTHORIZED", err)
	}
}
