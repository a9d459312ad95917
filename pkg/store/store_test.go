package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "modernc.org/sqlite"

	"github.com/aiproxy/aiproxy/db"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/storetest"
)

// t0 is the fixed "now" of the store tests, on a whole millisecond because
// the store keeps times in Unix milliseconds.
var t0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

// newTestStore opens a fresh database in a temporary folder: a copy of an
// empty one (pkg/storetest; the tests of Open and the migrations make
// their own), or a new PostgreSQL database.
func newTestStore(t *testing.T) *store.DB {
	t.Helper()
	if store.TestPostgres {
		path, opts := store.TestLocation(t, "")
		return openTestStore(t, path, opts...)
	}
	return openTestStore(t, storetest.NewFile(t))
}

// openTestStore opens path (creating it if needed) and closes it when the
// test ends.
func openTestStore(t *testing.T, path string, opts ...store.Option) *store.DB {
	t.Helper()
	if store.IsPostgres(path) { // another handle on a newTestStore's database
		path = store.FullDSN(path)
		if len(opts) == 0 {
			opts = []store.Option{store.WithSecretKey(store.TestSecret, "AIPROXY_SECRET_KEY")}
		}
	}
	d, err := store.Open(t.Context(), path, opts...)
	if err != nil {
		t.Fatalf("Open(%q) error = %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// openRaw opens path with database/sql directly, bypassing the store, for
// what the store API does not show (schema, query plans, held locks).
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	if store.IsPostgres(path) {
		raw, err := store.OpenRawPostgres(store.FullDSN(path))
		if err != nil {
			t.Fatalf("open raw %s: %v", path, err)
		}
		t.Cleanup(func() { raw.Close() })
		return raw
	}
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("open raw %s: %v", path, err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// createUser stores user name with a fresh key and returns the key.
func createUser(t *testing.T, d *store.DB, name string, expires *time.Time) string {
	t.Helper()
	k := keys.New()
	if err := d.CreateUser(t.Context(), name, keys.Hash(k), keys.Hint(k), t0, expires); err != nil {
		t.Fatalf("CreateUser(%q) error = %v", name, err)
	}
	return k
}

func wantCode(t *testing.T, op string, err error, code string) {
	t.Helper()
	if got := aiproxy.ErrorCode(err); got != code {
		t.Errorf("%s error = %v (code %q), want %s", op, err, got, code)
	}
}

func migrationNames(t *testing.T) []string {
	t.Helper()
	entries, err := fs.ReadDir(db.Migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

type appliedMigration struct {
	Name      string
	AppliedAt int64
}

func appliedMigrations(t *testing.T, path string) []appliedMigration {
	t.Helper()
	rows, err := openRaw(t, path).QueryContext(t.Context(), "SELECT name, applied_at FROM schema_migrations ORDER BY name")
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var out []appliedMigration
	for rows.Next() {
		var m appliedMigration
		if err := rows.Scan(&m.Name, &m.AppliedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpen_MigratesOnceAndReopens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d := openTestStore(t, path)
	createUser(t, d, "alice", nil)

	first := appliedMigrations(t, path)
	var gotNames []string
	for _, m := range first {
		gotNames = append(gotNames, m.Name)
	}
	if diff := cmp.Diff(migrationNames(t), gotNames); diff != "" {
		t.Errorf("schema_migrations after Open mismatch (-want +got):\n%s", diff)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}

	for i := 0; i < 3; i++ {
		d2 := openTestStore(t, path)
		if diff := cmp.Diff(first, appliedMigrations(t, path)); diff != "" {
			t.Errorf("re-open %d changed schema_migrations (-want +got):\n%s", i, diff)
		}
		if _, err := d2.UserByName(t.Context(), "alice"); err != nil {
			t.Errorf("re-open %d: UserByName(alice) error = %v, want the user kept", i, err)
		}
		d2.Close()
	}
}

// TestOpen_ConcurrentFirstOpen opens one new file from several handles at
// once, as `serve` and a CLI command may: all succeed and every migration
// is applied exactly once.
func TestOpen_ConcurrentFirstOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	const n = 4
	errs := make([]error, n)
	dbs := make([]*store.DB, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = store.Open(t.Context(), path) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Open #%d error = %v", i, err)
			continue
		}
		dbs[i].Close()
	}
	if got := len(appliedMigrations(t, path)); got != len(migrationNames(t)) {
		t.Errorf("schema_migrations has %d rows, want %d", got, len(migrationNames(t)))
	}
}

func TestOpen_RefusesNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	openTestStore(t, path).Close()
	if _, err := openRaw(t, path).ExecContext(t.Context(),
		"INSERT INTO schema_migrations (name, applied_at) VALUES ('9999_from_the_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	d, err := store.Open(t.Context(), path)
	if err == nil {
		d.Close()
		t.Fatalf("Open(db with unknown migration) error = nil, want a refusal")
	}
	wantCode(t, "Open(db with unknown migration)", err, aiproxy.EINVALID)
	if msg := err.Error(); !strings.Contains(msg, "newer aiproxy") || !strings.Contains(msg, "9999_from_the_future.sql") {
		t.Errorf("Open(db with unknown migration) error = %q, want it to mention a newer aiproxy and the schema", msg)
	}
}

func TestOpen_BadPaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	random := make([]byte, 64<<10)
	rand.Read(random)
	random[0] = 'X' // never the SQLite magic header
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, random, 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.db")
	if err := os.WriteFile(short, []byte("not a db"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A real database whose pages after the header were overwritten.
	damaged := filepath.Join(dir, "damaged.db")
	{
		d := openTestStore(t, damaged)
		for i := range 30 {
			createUser(t, d, fmt.Sprintf("user%d", i), nil)
		}
		d.Close()
		os.Remove(damaged + "-wal")
		os.Remove(damaged + "-shm")
		f, err := os.OpenFile(damaged, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(random[:8000], 100); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		path     string
		code     string
		contains string
	}{
		{"empty path", "", aiproxy.EINVALID, "empty"},
		{"directory", dir, aiproxy.EINVALID, "directory"},
		{"random bytes", garbage, aiproxy.EINVALID, "corrupt"},
		{"short file", short, aiproxy.EINVALID, "corrupt"},
		{"damaged pages", damaged, aiproxy.EINVALID, "corrupt"},
		{"parent is a file", filepath.Join(notDir, "aiproxy.db"), aiproxy.EINVALID, "not a directory"},
		{"question mark", filepath.Join(dir, "a?b.db"), aiproxy.EINVALID, "?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := store.Open(t.Context(), tc.path)
			if err == nil {
				d.Close()
				t.Fatalf("Open(%q) error = nil, want %s", tc.path, tc.code)
			}
			wantCode(t, fmt.Sprintf("Open(%q)", tc.path), err, tc.code)
			if !strings.Contains(err.Error(), tc.contains) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open(%q) error = %q, want one line mentioning %q", tc.path, err, tc.contains)
			}
		})
	}
	// The random file was left as it was: Open never "repairs" by truncating.
	got, err := os.ReadFile(garbage)
	if err != nil || !bytes.Equal(got, random) {
		t.Errorf("Open changed the corrupt file (err %v)", err)
	}
}

func TestOpen_Permissions(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	path := filepath.Join(base, "data", "aiproxy", "aiproxy.db")
	d := openTestStore(t, path)
	createUser(t, d, "alice", nil) // makes SQLite create -wal and -shm

	want := map[string]fs.FileMode{
		filepath.Join(base, "data"):            0o700,
		filepath.Join(base, "data", "aiproxy"): 0o700,
		path:                                   0o600,
		path + "-wal":                          0o600,
		path + "-shm":                          0o600,
	}
	got := map[string]fs.FileMode{}
	for p := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("Stat(%s) error = %v", p, err)
			continue
		}
		got[p] = fi.Mode().Perm()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("modes mismatch (-want +got):\n%s", diff)
	}
}

// TestOpen_WALMode checks from outside the store that the file is in WAL
// mode, which lets readers run beside a writer.
func TestOpen_WALMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	openTestStore(t, path)
	var mode string
	if err := openRaw(t, path).QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

// TestTwoHandlesWriteConcurrently is the CLI-and-serve case: two Open
// handles on one file write at the same time, and none of them may see
// "database is locked" or lose a write.
func TestTwoHandlesWriteConcurrently(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	handles := []*store.DB{openTestStore(t, path), openTestStore(t, path)}
	const usersPerHandle, batches, batchSize = 100, 50, 10

	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for h, d := range handles {
		wg.Go(func() {
			for i := range usersPerHandle {
				k := keys.New()
				if err := d.CreateUser(t.Context(), fmt.Sprintf("h%d-u%d", h, i), keys.Hash(k), keys.Hint(k), t0, nil); err != nil {
					fail(fmt.Errorf("handle %d CreateUser %d: %w", h, i, err))
				}
			}
		})
		wg.Go(func() {
			for b := range batches {
				batch := make([]aiproxy.Usage, batchSize)
				for i := range batch {
					batch[i] = aiproxy.Usage{Time: t0, UserID: 1, UserName: "x", Provider: "p", Path: "/v1/x", Status: 200}
				}
				if err := d.InsertUsage(t.Context(), batch); err != nil {
					fail(fmt.Errorf("handle %d InsertUsage %d: %w", h, b, err))
				}
			}
		})
		wg.Go(func() {
			for range 50 {
				if _, err := d.ListUsers(t.Context()); err != nil {
					fail(fmt.Errorf("handle %d ListUsers: %w", h, err))
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}

	users, err := handles[0].ListUsers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(users), 2*usersPerHandle; got != want {
		t.Errorf("ListUsers() has %d users, want %d", got, want)
	}
	rows, err := handles[1].Stats(t.Context(), aiproxy.StatsFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rows[0].Requests, int64(2*batches*batchSize); got != want {
		t.Errorf("Stats() requests = %d, want %d", got, want)
	}
	var check string
	if err := openRaw(t, path).QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check = %q, %v; want ok", check, err)
	}
}

func TestClaimServer(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	a, b := openTestStore(t, path), openTestStore(t, path)

	release, err := a.ClaimServer()
	if err != nil {
		t.Fatalf("first ClaimServer() error = %v", err)
	}
	_, err = b.ClaimServer()
	wantCode(t, "second ClaimServer() (other handle)", err, aiproxy.ECONFLICT)
	if err != nil && !strings.Contains(err.Error(), path) {
		t.Errorf("second ClaimServer() error = %q, want it to name the database", err)
	}
	_, err = a.ClaimServer()
	wantCode(t, "second ClaimServer() (same handle)", err, aiproxy.ECONFLICT)

	// Writes by other handles (CLI commands) are not blocked by the claim.
	createUser(t, b, "cli-user", nil)

	release()
	release2, err := b.ClaimServer()
	if err != nil {
		t.Fatalf("ClaimServer() after release error = %v", err)
	}
	release2()
	fi, err := os.Stat(path + ".lock")
	if err != nil {
		t.Fatalf("lock file: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("lock file mode = %v, want 0600", got)
	}
}

func TestBackup(t *testing.T) {
	t.Parallel()
	store.SQLiteOnly(t)
	d := newTestStore(t)
	ctx := t.Context()
	exp := t0.Add(48 * time.Hour)
	createUser(t, d, "alice", nil)
	bobKey := createUser(t, d, "bob", &exp)
	if err := d.AddProviderKey(ctx, store.ProviderKey{Host: "api.groq.com", BaseURL: "https://api.groq.com/openai", InjectUsage: nil, Secret: "gsk_secret", KeyHash: keys.Hash("gsk_secret"), KeyHint: keys.Hint("gsk_secret")}, t0); err != nil {
		t.Fatal(err)
	}

	// Keep usage writes going through another handle during the backup.
	other := openTestStore(t, d.Path())
	stop := make(chan struct{})
	writerDone := make(chan error)
	go func() {
		for {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			if err := other.InsertUsage(ctx, []aiproxy.Usage{{Time: t0, UserID: 1, UserName: "alice", Provider: "p", Path: "/v1/x", Status: 200}}); err != nil {
				writerDone <- err
				return
			}
		}
	}()

	dst := filepath.Join(t.TempDir(), "backup.db")
	err := d.Backup(ctx, dst)
	close(stop)
	if werr := <-writerDone; werr != nil {
		t.Errorf("InsertUsage during backup error = %v", werr)
	}
	if err != nil {
		t.Fatalf("Backup(%q) error = %v", dst, err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("backup file mode = %v, want 0600", got)
	}

	// The backup holds the provider keys sealed: it opens with the
	// original's secret only.
	if b, err := store.Open(ctx, dst); err == nil {
		b.Close()
		t.Errorf("Open(backup) without the original's secret succeeded")
	}
	secret := store.WithSecretKeyFile(d.SecretSource())
	b := openTestStore(t, dst, secret)
	wantUsers, err := d.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gotUsers, err := b.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(names(wantUsers), names(gotUsers)); diff != "" {
		t.Errorf("backup users mismatch (-want +got):\n%s", diff)
	}
	if u, err := b.UserByKeyHash(ctx, keys.Hash(bobKey)); err != nil || u.Name != "bob" || u.ExpiresAt == nil || !u.ExpiresAt.Equal(exp) {
		t.Errorf("backup UserByKeyHash(bob's key) = %+v, %v; want bob expiring %v", u, err, exp)
	}
	if p, err := b.ProviderByHost(ctx, "api.groq.com"); err != nil || len(p.Keys) != 1 {
		t.Errorf("backup ProviderByHost() = %+v, %v; want the provider with its key", p, err)
	}
	var check string
	if err := openRaw(t, dst).QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("backup integrity_check = %q, %v; want ok", check, err)
	}
	// The restored file keeps what the auth cache relies on: a key reset
	// through another handle is refused at once by b, which cached it.
	next := keys.New()
	if err := openTestStore(t, dst, secret).ResetUserKey(ctx, "bob", keys.Hash(next), keys.Hint(next), false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UserByKeyHash(ctx, keys.Hash(bobKey)); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("backup UserByKeyHash(bob's key reset elsewhere) error = %v, want EUNAUTHORIZED", err)
	}

	// An existing destination is refused and left untouched.
	existing := filepath.Join(t.TempDir(), "existing.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = d.Backup(ctx, existing)
	wantCode(t, "Backup(existing file)", err, aiproxy.ECONFLICT)
	if got, _ := os.ReadFile(existing); string(got) != "keep me" {
		t.Errorf("Backup(existing file) changed it to %q", got)
	}
	// So is an existing empty file, although VACUUM INTO would accept it.
	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "Backup(existing empty file)", d.Backup(ctx, empty), aiproxy.ECONFLICT)

	// A destination in a missing folder fails without leaving a file.
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "b.db")
	if err := d.Backup(ctx, missing); err == nil {
		t.Errorf("Backup(%q) error = nil, want an error", missing)
	}
}

func names(us []aiproxy.User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Name)
	}
	return out
}

// TestQueryPlans checks that the per-request auth lookup, and the id pick
// of CreateUser, use an index rather than scanning a table (DB-6).
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	openTestStore(t, path)
	raw := openRaw(t, path)
	tests := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"auth by key hash", "SELECT id, name, key_hint, created_at, expires_at FROM users WHERE key_hash = ?", []any{"h"}, "SEARCH users USING INDEX"},
		{"user by name", "SELECT id, name, key_hint, created_at, expires_at FROM users WHERE name = ?", []any{"n"}, "SEARCH users USING INDEX"},
		{"highest usage user id", "SELECT MAX(user_id) FROM usage", nil, "SEARCH usage USING COVERING INDEX"},
		{"user usage", "SELECT COUNT(*) FROM usage WHERE user_id = ?", []any{1}, "SEARCH usage USING COVERING INDEX"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rows, err := raw.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tc.query, tc.args...)
			if err != nil {
				t.Fatalf("EXPLAIN QUERY PLAN %s: %v", tc.query, err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			joined := strings.Join(plan, "; ")
			if !strings.Contains(joined, tc.want) || strings.Contains(joined, "SCAN") {
				t.Errorf("plan of %q = %q, want %q and no SCAN", tc.query, joined, tc.want)
			}
		})
	}
}

// TestHeldWriteLock holds the write lock from another connection, as a
// stuck process would (DB-3): writes fail with EUNAVAILABLE after the busy
// timeout, never hang and never report success, and reads keep working.
func TestHeldWriteLock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	const busy = 300 * time.Millisecond
	d, err := store.OpenWithBusyTimeout(ctx, path, busy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	aliceKey := createUser(t, d, "alice", nil)

	raw := openRaw(t, path)
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE: %v", err)
	}
	locked := true
	defer func() {
		if locked {
			conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	start := time.Now()
	k := keys.New()
	err = d.CreateUser(ctx, "bob", keys.Hash(k), keys.Hint(k), t0, nil)
	elapsed := time.Since(start)
	wantCode(t, "CreateUser under a held write lock", err, aiproxy.EUNAVAILABLE)
	if elapsed < busy*3/4 || elapsed > busy+5*time.Second {
		t.Errorf("CreateUser under a held write lock returned after %v, want about the busy timeout %v", elapsed, busy)
	}
	wantCode(t, "InsertUsage under a held write lock",
		d.InsertUsage(ctx, []aiproxy.Usage{{Time: t0, UserID: 1, UserName: "alice", Provider: "p", Path: "/v1/x", Status: 200}}),
		aiproxy.EUNAVAILABLE)
	wantCode(t, "DeleteUser under a held write lock", d.DeleteUser(ctx, "alice"), aiproxy.EUNAVAILABLE)

	// Reads do not wait for the writer.
	readStart := time.Now()
	if u, err := d.UserByKeyHash(ctx, keys.Hash(aliceKey)); err != nil || u.Name != "alice" {
		t.Errorf("UserByKeyHash under a held write lock = %+v, %v; want alice", u, err)
	}
	if us, err := d.ListUsers(ctx); err != nil || len(us) != 1 {
		t.Errorf("ListUsers under a held write lock = %v, %v; want alice alone", us, err)
	}
	if _, err := d.Stats(ctx, aiproxy.StatsFilter{}); err != nil {
		t.Errorf("Stats under a held write lock error = %v", err)
	}
	if readElapsed := time.Since(readStart); readElapsed >= busy {
		t.Errorf("reads under a held write lock took %v, want well under the busy timeout %v", readElapsed, busy)
	}

	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	locked = false
	if err := d.CreateUser(ctx, "bob", keys.Hash(k), keys.Hint(k), t0, nil); err != nil {
		t.Errorf("CreateUser after the lock is released error = %v", err)
	}
	if _, err := d.UserByName(ctx, "alice"); err != nil {
		t.Errorf("alice after the failed DeleteUser: %v, want her kept", err)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	d := newTestStore(t)
	if err := d.Ping(t.Context()); err != nil {
		t.Errorf("Ping() error = %v", err)
	}
	d.Close()
	if err := d.Ping(t.Context()); err == nil {
		t.Errorf("Ping() after Close error = nil, want an error")
	}
}
