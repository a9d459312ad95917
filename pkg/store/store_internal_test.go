package store

import (
	"path/filepath"
	"sync"
	"testing"
)

// TestOpen_PragmasOnEveryConnection checks that the DSN pragmas reach every
// pooled connection, not just the first one (a db.Exec("PRAGMA ...") would
// not): several connections are held at once and each is asked.
func TestOpen_PragmasOnEveryConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, err := Open(ctx, filepath.Join(t.TempDir(), "aiproxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	type pragmas struct {
		BusyTimeout int64
		JournalMode string
		ForeignKeys int
		Synchronous int
	}
	want := pragmas{BusyTimeout: BusyTimeout.Milliseconds(), JournalMode: "wal", ForeignKeys: 1, Synchronous: 1}

	const n = 4
	var wg sync.WaitGroup
	got := make([]pragmas, n)
	errs := make([]error, n)
	hold := make(chan struct{})
	var ready sync.WaitGroup
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			conn, err := d.sql.Conn(ctx)
			ready.Done()
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close()
			<-hold // keep the connection checked out so that each goroutine gets its own
			p := &got[i]
			for _, q := range []struct {
				sql  string
				dest any
			}{
				{"PRAGMA busy_timeout", &p.BusyTimeout},
				{"PRAGMA journal_mode", &p.JournalMode},
				{"PRAGMA foreign_keys", &p.ForeignKeys},
				{"PRAGMA synchronous", &p.Synchronous},
			} {
				if err := conn.QueryRowContext(ctx, q.sql).Scan(q.dest); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	ready.Wait()
	close(hold)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("connection %d: %v", i, errs[i])
			continue
		}
		if got[i] != want {
			t.Errorf("connection %d pragmas = %+v, want %+v", i, got[i], want)
		}
	}
}
