package cmd

import (
	"os"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/storetest"
)

// TestMain gives the tests a home of their own: a command run without
// --db uses the per-user default path, which must never be the real one.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "aiproxy-cmd-test-home-")
	if err != nil {
		panic(err)
	}
	os.Setenv("HOME", home)
	os.Setenv("XDG_DATA_HOME", home+"/data")
	code := pgtest.Main(m) // m.Run, then stop the PostgreSQL tests' cluster
	os.RemoveAll(home)
	storetest.Cleanup()
	os.Exit(code)
}
