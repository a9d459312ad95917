package store

import (
	"context"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

// BenchmarkCacheAfterUsageWrite is what the usage writer's commits cost the
// auth cache: each op commits one usage record through another handle (not
// timed), then looks up 100 active users through serve's cache (timed), as
// requests do between two of the writer's batches. reloads/op is how often
// the cache was emptied or refreshed per commit.
//
// A usage record changes no user, so the target is 0 reloads/op and the
// lookups at the hot cost: one prepared auth_version read and a map read
// each. Allocation budget: ≤ 20 allocs per lookup, nearly all in that read
// (database/sql's QueryRow).
func BenchmarkCacheAfterUsageWrite(b *testing.B) {
	ctx := context.Background()
	serve, cli := openPair(b)
	const active = 100
	if err := SeedUsers(ctx, cli, active); err != nil {
		b.Fatal(err)
	}
	hashes := make([]string, active)
	for i := range hashes {
		hashes[i] = keys.Hash(BenchKey(i))
		if _, err := serve.UserByKeyHash(ctx, hashes[i]); err != nil {
			b.Fatal(err)
		}
	}
	rec := []aiproxy.Usage{{Time: time.Now(), UserID: 1, UserName: "bench000000000", Provider: "p", Path: "/v1", Status: 200}}
	gen := func() uint64 {
		serve.cache.mu.Lock()
		defer serve.cache.mu.Unlock()
		return serve.cache.gen
	}
	before := gen()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := cli.InsertUsage(ctx, rec); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, h := range hashes {
			if _, err := serve.UserByKeyHash(ctx, h); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(gen()-before)/float64(b.N), "reloads/op")
}

// BenchmarkProviderByHostUncached is the provider lookup that a cache miss
// costs: the ordered join of a host with its keys (two keys here), and the
// unsealing of both keys (about 1 µs each, pkg/seal's BenchmarkOpen),
// without the cache. Allocation budget: ≤ 70 allocs/op, nearly all
// database/sql's (a row of seven columns per key), the two unsealed keys
// and the provider's slices.
func BenchmarkProviderByHostUncached(b *testing.B) {
	ctx := context.Background()
	d, _ := openPair(b)
	const host = "api.example.com"
	for _, secret := range []string{"sk-upstream-1", "sk-upstream-2"} {
		err := d.AddProviderKey(ctx, ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
			Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if p, err := d.providerByHost(ctx, host); err != nil || len(p.Keys) != 2 {
			b.Fatalf("providerByHost = %v, %v; want 2 keys", p.Keys, err)
		}
	}
}
