package pgtest_test

import (
	"database/sql"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestNewDatabase_separateAndEmpty: each call gives an empty database of
// its own, so tests cannot see each other's tables.
func TestNewDatabase_separateAndEmpty(t *testing.T) {
	a, b := open(t, pgtest.NewDatabase(t)), open(t, pgtest.NewDatabase(t))
	if _, err := a.Exec("CREATE TABLE only_a (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'only_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("second database sees the first one's table")
	}
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("ping %s: %v", dsn, err)
	}
	return db
}

// TestCluster_ImmediateStopKeepsCommits: a test's own cluster stopped as
// by a crash and started again keeps every committed row, and serves on
// the same DSN.
func TestCluster_ImmediateStopKeepsCommits(t *testing.T) {
	c := pgtest.NewCluster(t)
	dsn := c.NewDatabase(t)
	db := open(t, dsn)
	if _, err := db.Exec("CREATE TABLE kept (x int); INSERT INTO kept SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	c.Stop(t, "immediate")
	if err := db.Ping(); err == nil {
		t.Errorf("Ping while stopped succeeded")
	}
	c.Start(t)
	var n int
	if err := open(t, dsn).QueryRow("SELECT COUNT(*) FROM kept").Scan(&n); err != nil || n != 100 {
		t.Errorf("rows after restart = %d, %v; want 100", n, err)
	}
}
