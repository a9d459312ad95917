package store_test

import (
	"context"
	"flag"
	"path/filepath"
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
//     ≤ 5 µs, and the same at both sizes. hot_1000_keys (1,000,000 users
//     only) cycles 1,000 keys spread over the table: more of the cache is
//     touched, as with many active users.
//     Allocation budget: 3 allocs/op, all in keys.Hash (the key copied to
//     []byte, the hex bytes, the string); 0 from the cache (a map read and
//     the 48-byte WAL-index header compare; no data_version read).
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
