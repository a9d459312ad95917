package store_test

import (
	"os"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/storetest"
)

// TestMain stops the PostgreSQL tests' cluster, if one was started, and
// removes newTestStore's template database.
func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	storetest.Cleanup()
	os.Exit(code)
}
