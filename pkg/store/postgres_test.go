package store_test

import (
	"io/fs"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/db"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/store"
)

func pgSecret() store.Option { return store.WithSecretKey(store.TestSecret, "AIPROXY_SECRET_KEY") }

// TestPostgres_TenInstancesMigrateOnce: ten instances opening one new
// database together all succeed, and each migration is applied once (the
// advisory lock), with the same schema as one instance would make.
func TestPostgres_TenInstancesMigrateOnce(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	dbs := make([]*store.DB, 10)
	errs := make([]error, 10)
	for i := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dbs[i], errs[i] = store.Open(t.Context(), dsn, pgSecret())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d error = %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	raw, err := store.OpenRawPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var n, distinct int
	if err := raw.QueryRow("SELECT COUNT(*), COUNT(DISTINCT name) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != distinct || n == 0 {
		t.Errorf("schema_migrations holds %d rows for %d migrations, want each once", n, distinct)
	}
	// Every instance sees the others' writes.
	if err := dbs[3].CreateUser(t.Context(), "alice", "h", "hint", t0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dbs[7].UserByName(t.Context(), "alice"); err != nil {
		t.Errorf("UserByName(alice) on another instance error = %v", err)
	}
}

// TestPostgres_AppliesItsOwnMigrationFolder: PostgreSQL applies every file
// of db/migrations/postgres, those without a SQLite twin too
// (0011_notify.sql), and no other.
func TestPostgres_AppliesItsOwnMigrationFolder(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	d, err := store.Open(t.Context(), dsn, pgSecret())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	entries, err := fs.ReadDir(db.PostgresMigrations, "migrations/postgres")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		want = append(want, e.Name())
	}
	if !slices.Contains(want, "0011_notify.sql") {
		t.Fatalf("db/migrations/postgres = %v, want 0011_notify.sql among them", want)
	}
	if _, err := fs.Stat(db.Migrations, "migrations/0011_notify.sql"); err == nil {
		t.Fatalf("0011_notify.sql has a SQLite twin: this test then proves nothing")
	}
	raw, err := store.OpenRawPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rows, err := raw.QueryContext(t.Context(), "SELECT name FROM schema_migrations ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema_migrations mismatch (-want +got):\n%s", diff)
	}
}

// TestPostgres_RefusesWithoutSecret: no key file is made beside a DSN, so
// a PostgreSQL store without a secret refuses to open, saying what to give.
func TestPostgres_RefusesWithoutSecret(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	_, err := store.Open(t.Context(), dsn)
	if aiproxy.ErrorCode(err) != aiproxy.EINVALID || !strings.Contains(err.Error(), "AIPROXY_SECRET_KEY") {
		t.Errorf("Open(no secret) error = %v, want EINVALID naming AIPROXY_SECRET_KEY", err)
	}
}

// TestPostgres_UnreachableOneLineNoPassword: a DSN nobody answers fails at
// once with one line naming host and database, never the password.
func TestPostgres_UnreachableOneLineNoPassword(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	dsn := "postgres://aiproxy:hunter2secret@" + addr + "/aiproxydb?sslmode=disable&connect_timeout=5"
	_, err = store.Open(t.Context(), dsn, pgSecret())
	if err == nil {
		t.Fatal("Open(unreachable) succeeded")
	}
	msg := err.Error()
	for _, want := range []string{addr, "aiproxydb", "unreachable"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Open(unreachable) error = %q, want it to name %q", msg, want)
		}
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, "\n") {
		t.Errorf("Open(unreachable) error = %q: holds the password or several lines", msg)
	}
	if aiproxy.ErrorCode(err) != aiproxy.EUNAVAILABLE {
		t.Errorf("Open(unreachable) code = %q, want EUNAVAILABLE", aiproxy.ErrorCode(err))
	}
}

// TestPostgres_WrongDatabaseNotShown: a database the server does not have
// is named, the DSN's password is not.
func TestPostgres_WrongDatabaseNotShown(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	bad := strings.Replace(dsn, "postgres@", "postgres:s3cr3tpw@", 1)
	bad = bad[:strings.LastIndex(bad, "/")] + "/no_such_db?sslmode=disable"
	_, err := store.Open(t.Context(), bad, pgSecret())
	if err == nil || strings.Contains(err.Error(), "s3cr3tpw") || !strings.Contains(err.Error(), "no_such_db") {
		t.Errorf("Open(missing database) error = %v, want one naming no_such_db without the password", err)
	}
}

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:pw@db.example:5432/aiproxy?sslmode=require", "postgres://db.example:5432/aiproxy"},
		{"postgresql://u@localhost/x", "postgres://localhost/x"},
		{"postgres:///aiproxy?host=/run/postgresql&password=pw", "postgres:///run/postgresql/aiproxy"},
	} {
		if got := store.RedactDSN(tc.dsn); got != tc.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}

// TestPostgres_ClaimServerShared: any number of serve processes share a
// PostgreSQL database, and a rekey is refused while one runs.
func TestPostgres_ClaimServerShared(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	a, err := store.Open(t.Context(), dsn, pgSecret())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.Open(t.Context(), dsn, pgSecret())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	relA, err := a.ClaimServer()
	if err != nil {
		t.Fatalf("ClaimServer(a) error = %v", err)
	}
	relB, err := b.ClaimServer()
	if err != nil {
		t.Fatalf("ClaimServer(b) error = %v, want a second serve allowed", err)
	}
	addProviderKey(t, a, "api.example.com", "sk-upstream-1")
	keyFile := secretFile(t)
	if err := a.Rekey(t.Context(), keyFile); aiproxy.ErrorCode(err) != aiproxy.ECONFLICT {
		t.Errorf("Rekey while serving error = %v, want ECONFLICT", err)
	}
	relA()
	relB()
	if err := a.Rekey(t.Context(), keyFile); err != nil {
		t.Errorf("Rekey after serve stopped error = %v", err)
	}
	if _, err := store.Open(t.Context(), dsn, store.WithSecretKeyFile(keyFile)); err != nil {
		t.Errorf("Open with the new secret error = %v", err)
	}
}

// BenchmarkUserByKeyHash_Stores: the per-request authentication of a cached
// user. sqlite reads auth_version once (a read transaction on a pinned
// connection); postgres_unwatched too (one round trip of a prepared
// statement: the CLI's handle, and serve's while its listener is down);
// postgres is serve's handle (ClaimServer), whose listener keeps the cache
// current, so no query at all. Besides ns/op, cpu-ns/op is this process's
// CPU time (user + system) per lookup; a lookup that queries also costs
// the server's CPU, not counted here.
//
//	go test -run '^$' -bench BenchmarkUserByKeyHash_Stores -benchtime 20000x ./pkg/store
func BenchmarkUserByKeyHash_Stores(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres_unwatched", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			var d *store.DB
			var err error
			if kind != "sqlite" {
				d, err = store.Open(b.Context(), pgtest.NewDatabase(b), pgSecret())
			} else {
				d, err = store.Open(b.Context(), b.TempDir()+"/aiproxy.db")
			}
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			if kind == "postgres" {
				release, err := d.ClaimServer()
				if err != nil {
					b.Fatal(err)
				}
				defer release()
			}
			if err := d.CreateUser(b.Context(), "alice", "hash-a", "hint", t0, nil); err != nil {
				b.Fatal(err)
			}
			if kind == "postgres" { // until the listener is connected, lookups read the version
				for deadline := time.Now().Add(10 * time.Second); !store.Listening(d); {
					if time.Now().After(deadline) {
						b.Fatal("listener not connected after 10 s")
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			if _, err := d.UserByKeyHash(b.Context(), "hash-a"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu := processCPU()
			b.ResetTimer()
			for b.Loop() {
				if _, err := d.UserByKeyHash(b.Context(), "hash-a"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
