package cmd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBackup(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	// The backup is taken while another handle (a running serve) is open.
	openService(t, db)

	dst := filepath.Join(t.TempDir(), "backup.db")
	if out := runOK(t, "--db", db, "backup", dst); out != "" {
		t.Errorf("backup printed %q, want nothing", out)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("backup file mode = %o, want 600", perm)
	}
	for _, list := range [][]string{{"user", "list", "--json"}, {"provider", "list", "--json"}, {"stats", "--by", "day", "--json"}} {
		want := runOK(t, append([]string{"--db", db}, list...)...)
		// A backup holds sealed provider keys: it opens with the original's secret.
		got := runOK(t, append([]string{"--db", dst, "--secret-key-file", db + ".key"}, list...)...)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%v of the backup (-original +backup):\n%s", list, diff)
		}
	}
}

func TestBackup_errors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"file exists", []string{"backup", existing}, "backup file " + existing + " already exists"},
		{"folder missing", []string{"backup", filepath.Join(dir, "no", "such", "dir", "b.db")}, filepath.Join(dir, "no", "such", "dir", "b.db")},
		{"no FILE", []string{"backup"}, "backup: missing FILE"},
		{"two files", []string{"backup", "a.db", "b.db"}, `unexpected argument "b.db"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			runOK(t, "--db", db, "user", "create", "alice")
			before := snapshot(t, db)
			checkFailed(t, run(t, "", append([]string{"--db", db}, tc.args...)...), tc.want)
			if diff := cmp.Diff(before, snapshot(t, db)); diff != "" {
				t.Errorf("backup changed the database (-before +after):\n%s", diff)
			}
		})
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "keep me" {
		t.Errorf("existing file after a refused backup = %q, %v; want it untouched", b, err)
	}
}
