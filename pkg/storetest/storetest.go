// Package storetest gives tests a new, empty SQLite database quickly.
//
// Creating aiproxy's schema means parsing every migration; in pure-Go SQLite
// under the race detector (with checkptr) that costs a few hundred
// milliseconds of CPU, and about half of the CPU of the packages whose
// tests open many databases. NewFile makes the schema once per test binary
// and hands each test a copy of the file.
package storetest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/store"
)

var (
	once sync.Once
	tmpl string
	err  error
)

// NewFile returns the path of a new database in a fresh temporary folder of
// t: the schema made, no rows, and its key file beside it (the secret of
// every copy is the same).
func NewFile(t testing.TB) string {
	t.Helper()
	once.Do(makeTemplate)
	if err != nil {
		t.Fatalf("storetest: template database: %v", err)
	}
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	for _, suffix := range []string{"", store.KeyFileSuffix} {
		b, err := os.ReadFile(tmpl + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// Cleanup removes the template: call it from TestMain after m.Run.
func Cleanup() {
	if tmpl != "" {
		os.RemoveAll(filepath.Dir(tmpl))
	}
}

func makeTemplate() {
	dir, e := os.MkdirTemp("", "aiproxy-storetest-")
	if e != nil {
		err = e
		return
	}
	tmpl = filepath.Join(dir, "aiproxy.db")
	d, e := store.Open(context.Background(), tmpl)
	if e != nil {
		err = e
		return
	}
	err = d.Close()
}
