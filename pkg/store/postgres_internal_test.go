package store

import (
	"database/sql"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// The store's tests run against SQLite, and with AIPROXY_TEST_STORE=postgres
// against PostgreSQL too (a throwaway cluster, pkg/pgtest): every test that
// opens its database with newTestStore or openPair then gets a fresh
// PostgreSQL database instead of a file. Tests of what only a file has
// (modes, WAL, the lock file, backup, query plans) keep using files, or
// call SQLiteOnly.
//
//	AIPROXY_TEST_STORE=postgres go test ./pkg/store
//
// TestMain is in main_test.go.

// TestPostgres is set when the suite runs against PostgreSQL.
var TestPostgres = os.Getenv("AIPROXY_TEST_STORE") == "postgres"

// TestSecret is the secret the tests give a PostgreSQL store (base64 of 32
// bytes), which needs one.
const TestSecret = "YWlwcm94eSB0ZXN0IHNlY3JldCBrZXkgMzIgYnl0ZXM="

// testDSNs maps a store's Path (the redacted DSN) to its full DSN, for the
// tests that open a second handle or a raw connection.
var testDSNs sync.Map

// NewTestDSN creates an empty PostgreSQL database for t and returns its DSN.
func NewTestDSN(t testing.TB) string {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	testDSNs.Store(RedactDSN(dsn), dsn)
	return dsn
}

// FullDSN returns the full DSN of a store path made by NewTestDSN, or path.
func FullDSN(path string) string {
	if v, ok := testDSNs.Load(path); ok {
		return v.(string)
	}
	return path
}

// SQLiteOnly skips t when the suite runs against PostgreSQL: t tests what
// only a SQLite file has.
func SQLiteOnly(t testing.TB) {
	t.Helper()
	if TestPostgres {
		t.Skip("SQLite only: this tests the database file")
	}
}

// testLocation is where a test's database goes: a file in a temporary
// folder, or a new PostgreSQL database.
func testLocation(t testing.TB, file string) (string, []Option) {
	if TestPostgres {
		return NewTestDSN(t), []Option{WithSecretKey(TestSecret, "AIPROXY_SECRET_KEY")}
	}
	return file, nil
}

// TestLocation is testLocation for the external tests.
var TestLocation = testLocation

// OpenRawPostgres opens dsn with database/sql through the store's own
// connections (? placeholders work), bypassing the store, for the tests that
// read or write rows directly.
func OpenRawPostgres(dsn string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(pgConnector{base: stdlib.GetConnector(*cfg), rebind: &rebinder{}}), nil
}
