package server_test

import (
	"os"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	storetest.Cleanup() // the template database of the harness
	os.Exit(code)
}
