package cmd

import (
	"os"
	"testing"
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
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}
