package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

// BenchKey is the key of the i-th user SeedUsers makes: valid, and cheap
// to recompute.
func BenchKey(i int) string { return fmt.Sprintf("sk-cfw%045d", i) }

// SeedUsers adds n users with keys BenchKey(0) … BenchKey(n-1) in one
// transaction, for benchmarks: a million in a few seconds. Rows go in
// key-hash order and are named in that order, so that both unique indexes
// (key_hash, name) grow at their end instead of splitting pages all over,
// 500 rows per INSERT.
func SeedUsers(ctx context.Context, d *DB, n int) error {
	hashes := make([]string, n)
	for i := range hashes {
		hashes[i] = keys.Hash(BenchKey(i))
	}
	slices.Sort(hashes)
	now := time.Now().UnixMilli()
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "PRAGMA cache_size = -262144"); err != nil {
		return err
	}
	const per = 500
	args := make([]any, 0, 4*per)
	var stmt string
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		if q := "INSERT INTO users (name, key_hash, key_hint, created_at) VALUES " +
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", hi-lo), ","); q != stmt {
			stmt = q
		}
		args = args[:0]
		for i := lo; i < hi; i++ {
			args = append(args, fmt.Sprintf("bench%09d", i), hashes[i], "sk-cfw…"+hashes[i][:4], now)
		}
		if _, err := tx.ExecContext(ctx, stmt, args...); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, "PRAGMA cache_size = -2000"); err != nil {
		return err
	}
	return tx.Commit()
}

// UserByKeyHashUncached is UserByKeyHash without the cache: what a lookup
// costs right after a commit emptied it.
func (d *DB) UserByKeyHashUncached(ctx context.Context, keyHash string) (aiproxy.User, error) {
	return d.userByKeyHash(ctx, keyHash)
}
