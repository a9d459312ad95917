package admin_test

import (
	"os"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	storetest.Cleanup() // the template database of newService
	os.Exit(code)
}
