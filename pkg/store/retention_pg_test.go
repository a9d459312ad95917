package store

import (
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// TestRetention_PostgresOneInstanceFoldsAtATime: on PostgreSQL, where
// every instance runs the retention, a pass that finds another instance's
// pass holding the retention lock folds nothing and returns at once; once
// the lock is free, a pass folds every old row.
func TestRetention_PostgresOneInstanceFoldsAtATime(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	a, b := openPG(t, dsn), openPG(t, dsn)
	ctx := t.Context()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	var batch []aiproxy.Usage
	for i := range 30 {
		batch = append(batch, aiproxy.Usage{Time: now.AddDate(0, 0, -10).Add(time.Duration(i) * time.Minute),
			UserID: 1, UserName: "alice", Provider: "p", Model: "m", Path: "/v1/x", Status: 200})
	}
	if err := a.InsertUsage(ctx, batch); err != nil {
		t.Fatal(err)
	}
	r := Retention{Keep: 2 * 24 * time.Hour, Chunk: 7, Now: func() time.Time { return now }}

	unlock, ok, err := b.pgTryLock(ctx, pgLockRetention) // b's pass is running
	if err != nil || !ok {
		t.Fatalf("pgTryLock(retention) = %v, %v; want the lock", ok, err)
	}
	if n, err := a.FoldOld(ctx, r); n != 0 || err != nil {
		t.Errorf("FoldOld while another instance folds = %d, %v; want 0, nil", n, err)
	}
	if _, ok, _ := a.pgTryLock(ctx, pgLockRetention); ok {
		t.Errorf("a second pgTryLock(retention) got the lock, want it refused")
	}
	unlock()

	if n, err := a.FoldOld(ctx, r); n != len(batch) || err != nil {
		t.Errorf("FoldOld once the lock is free = %d, %v; want %d, nil", n, err, len(batch))
	}
	var rows int
	if err := a.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM usage").Scan(&rows); err != nil || rows != 0 {
		t.Errorf("usage rows left = %d, %v; want 0", rows, err)
	}
	// The lock went with the pass.
	unlock, ok, err = b.pgTryLock(ctx, pgLockRetention)
	if err != nil || !ok {
		t.Errorf("pgTryLock(retention) after the pass = %v, %v; want the lock released", ok, err)
	} else {
		unlock()
	}
}
