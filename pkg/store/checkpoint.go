package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"sync"
	"time"
)

// IdleCheckpoint is how long after its last usage write a database
// checkpoints its WAL and truncates the -wal file to zero bytes (DB-8).
//
// SQLite bounds the WAL by itself while writes go on: each commit that
// leaves more than 1000 pages in it checkpoints them (PASSIVE), and once a
// checkpoint has caught up, the next writer starts the WAL over and cuts
// the file back to journal_size_limit (64 MiB). What that leaves is the
// file's size when writes stop: up to 64 MiB on disk for good, and frames
// that every reader must look up in the wal-index and that a crash must
// replay. Checkpointing when idle returns both.
const IdleCheckpoint = 5 * time.Second

// checkpointer runs wal_checkpoint(TRUNCATE) once the usage writes have
// paused for after. Only a process that writes usage records (serve) arms
// it; CLI commands never do.
type checkpointer struct {
	after       time.Duration
	busyTimeout time.Duration
	run         func(ctx context.Context) (done bool)

	mu      sync.Mutex
	timer   *time.Timer
	closed  bool
	running sync.WaitGroup
}

// touch (re)starts the idle wait: called after each usage write.
func (c *checkpointer) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.after <= 0 {
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(c.after, c.fire)
		return
	}
	c.timer.Reset(c.after)
}

func (c *checkpointer) fire() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.running.Add(1)
	c.mu.Unlock()
	defer c.running.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !c.run(ctx) {
		c.touch() // a reader or a writer was in the way: try again later
	}
}

// close stops the timer and waits for a checkpoint that is running.
func (c *checkpointer) close() {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.running.Wait()
}

// checkpointTruncate copies the whole WAL into the database file and
// truncates the -wal to zero bytes. It reports false when it could not
// finish because another connection was writing or still reading an older
// snapshot. It never waits for them: busy_timeout is 0 on its connection
// meanwhile, as TRUNCATE would otherwise keep every writer (a CLI command)
// waiting while it waited for a reader.
func (d *DB) checkpointTruncate(ctx context.Context) bool {
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = 0"); err != nil {
		return false
	}
	var busy, frames, copied int
	err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &copied)
	if _, rerr := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+fmt.Sprint(d.ckpt.busyTimeout.Milliseconds())); rerr != nil {
		// Never hand a connection without its busy timeout back to the pool.
		conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	return err == nil && busy == 0
}
