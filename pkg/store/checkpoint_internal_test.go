package store

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func walSize(path string) int64 {
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestIdleCheckpoint: once usage writes pause, the WAL is checkpointed and
// the -wal truncated to zero bytes; a reader on an older snapshot
// postpones it without making a writer wait, and it happens once the reader
// is gone (DB-8). pkg/e2e checks the bound under load.
func TestIdleCheckpoint(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	const idle = 100 * time.Millisecond
	d.ckpt.after = idle
	rec := []aiproxy.Usage{{Time: time.Now(), UserID: 1, UserName: "u", Provider: "p", Path: "/v1/x", Status: 200}}

	if err := d.InsertUsage(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if walSize(path) == 0 {
		t.Fatalf("-wal is empty right after a write")
	}
	if !waitFor(5*time.Second, func() bool { return walSize(path) == 0 }) {
		t.Fatalf("-wal = %d bytes 5 s after the last usage write, want 0", walSize(path))
	}

	// A reader keeps an old snapshot while another write lands.
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM usage").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := d.InsertUsage(ctx, rec); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * idle) // several checkpoint attempts meet the reader
	if walSize(path) == 0 {
		t.Errorf("-wal truncated while a reader still needed it")
	}
	start := time.Now()
	if err := d.CreateUser(ctx, "w", "h", "hint", time.Now(), nil); err != nil {
		t.Errorf("CreateUser beside a pending checkpoint: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("CreateUser beside a pending checkpoint took %v, want no wait", el)
	}
	tx.Rollback()
	if !waitFor(5*time.Second, func() bool { return walSize(path) == 0 }) {
		t.Errorf("-wal = %d bytes 5 s after the reader ended, want 0", walSize(path))
	}
	var busy int64
	d.sql.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy)
	if busy != BusyTimeout.Milliseconds() {
		t.Errorf("busy_timeout of a pooled connection = %d, want %d", busy, BusyTimeout.Milliseconds())
	}

	// Close stops a pending checkpoint.
	if err := d.InsertUsage(ctx, rec); err != nil {
		t.Fatal(err)
	}
	d.Close()
	time.Sleep(2 * idle)
	if d.ckpt.timer.Stop() {
		t.Errorf("the checkpoint timer was still armed after Close")
	}
}
