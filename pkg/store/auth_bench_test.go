package store_test

import (
	"context"
	"flag"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// BenchmarkAuthenticate is the key check of every proxied request,
// admin.Service.Authenticate: keys.Valid, keys.Hash (hex SHA-256), the
// store lookup and the expiry check, over databases of 10 and 1,000,000
// users. The latter is skipped under -short and in a one-iteration smoke
// run (-benchtime 1x): seeding a million users takes 10–30 s.
//
//   - hot: a warm cache, as between two commits; the same 10 keys cycle
//     at both sizes, so that only the size of the table differs. Target
//     ≤ 15 µs (the auth_version read is most of it: 5–10 µs on 2 shared
//     cores), and the same at both sizes. hot_1000_keys (1,000,000 users
//     only) cycles 1,000 keys spread over the table: more of the cache is
//     touched, as with many active users.
//     Allocation budget: 3 allocs/op in keys.Hash (the key copied to
//     []byte, the hex bytes, the string), plus those of the one prepared
//     auth_version read (database/sql's QueryRow) and a map read.
//   - miss: the indexed SELECT that a lookup costs after a commit emptied
//     the cache (keys.Hash plus the query, without the cache).
//     Allocation budget: ≤ 40 allocs/op, nearly all database/sql's.
func BenchmarkAuthenticate(b *testing.B) {
	for _, n := range []int{10, 1_000_000} {
		b.Run("users="+strconv.Itoa(n), func(b *testing.B) {
			if n > 1000 && (testing.Short() || smokeRun()) {
				b.Skip("seeding a million users takes 10-30 s: skipped under -short and -benchtime 1x")
			}
			ctx := context.Background()
			d, err := store.Open(ctx, filepath.Join(b.TempDir(), "aiproxy.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			start := time.Now()
			if err := store.SeedUsers(ctx, d, n); err != nil {
				b.Fatal(err)
			}
			b.Logf("seeded %d users in %s", n, time.Since(start).Round(time.Millisecond))
			svc := admin.New(d)
			keysOf := func(active int) []string {
				step := n / active // spread the active keys over the whole table
				ks := make([]string, active)
				for i := range ks {
					ks[i] = store.BenchKey(i * step)
					if _, err := svc.Authenticate(ctx, ks[i]); err != nil {
						b.Fatalf("Authenticate(%s) error = %v", ks[i], err)
					}
				}
				return ks
			}
			hot := func(ks []string) func(b *testing.B) {
				return func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						if _, err := svc.Authenticate(ctx, ks[i]); err != nil {
							b.Fatal(err)
						}
						if i++; i == len(ks) {
							i = 0
						}
					}
				}
			}
			b.Run("hot", hot(keysOf(min(n, 10))))
			ks := keysOf(min(n, 1000))
			if n >= 1000 {
				b.Run("hot_1000_keys", hot(ks))
			}
			b.Run("miss", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					k := ks[i]
					if !keys.Valid(k) {
						b.Fatal("invalid key")
					}
					if _, err := d.UserByKeyHashUncached(ctx, keys.Hash(k)); err != nil {
						b.Fatal(err)
					}
					if i++; i == len(ks) {
						i = 0
					}
				}
			})
		})
	}
}

// smokeRun reports whether the benchmarks run for one iteration only, as
// CI does to prove that they still run.
func smokeRun() bool {
	f := flag.Lookup("test.benchtime")
	return f != nil && f.Value.String() == "1x"
}

// TestAuthLookup_Flat: the key lookup that a cache miss costs is an index
// search, the same with 10 and with 20,000 users, not a scan that grows
// with the table (RELIABILITY.md DB-6; TestQueryPlans checks the plan, this
// the cost). Both databases are looked up without the cache, interleaved,
// so that machine noise hits them alike; pkg/e2e's TestDB6_AuthLatencyFlat
// checks whole proxied requests.
func TestAuthLookup_Flat(t *testing.T) {
	ctx := t.Context()
	const big = 20_000
	open := func(n int) *store.DB {
		d, err := store.Open(ctx, filepath.Join(t.TempDir(), "aiproxy.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		if err := store.SeedUsers(ctx, d, n); err != nil {
			t.Fatal(err)
		}
		return d
	}
	ds, db := open(10), open(big)
	lookup := func(d *store.DB, i int) time.Duration {
		h := keys.Hash(store.BenchKey(i))
		start := time.Now()
		if _, err := d.UserByKeyHashUncached(ctx, h); err != nil {
			t.Fatalf("UserByKeyHashUncached(user %d) error = %v", i, err)
		}
		return time.Since(start)
	}
	const lookups = 1000
	ts, tb := make([]time.Duration, lookups), make([]time.Duration, lookups)
	for j := range lookups {
		ts[j] = lookup(ds, j%10)
		tb[j] = lookup(db, j*7919%big) // spread over the whole table
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	ms, mb := median(ts), median(tb)
	t.Logf("uncached lookup p50: 10 users %v, %d users %v", ms, big, mb)
	if mb > 2*ms+50*time.Microsecond {
		t.Errorf("median lookup with %d users = %v, want flat: ≤ 2 × %v (10 users) + 50 µs", big, mb, ms)
	}
}
