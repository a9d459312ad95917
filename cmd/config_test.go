package cmd

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// These tests set environment variables and the working directory, so none
// of them runs in parallel.

// isolateEnv points HOME and XDG_DATA_HOME at temporary folders and unsets
// AIPROXY_*, so that no test reads or writes the real user's database.
func isolateEnv(t *testing.T) (home, xdg string) {
	t.Helper()
	dir := t.TempDir()
	home, xdg = filepath.Join(dir, "home"), filepath.Join(dir, "xdg")
	t.Setenv("HOME", home)
	t.Setenv("XDG_DATA_HOME", xdg)
	for _, k := range []string{"AIPROXY_DB", "AIPROXY_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	return home, xdg
}

func TestConfig_layering(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "darwin" {
		t.Skip("default path checked for XDG platforms only")
	}
	tests := []struct {
		name                  string
		flag, env, configFile bool
		want                  string // which database is used
	}{
		{"flag beats env and config file", true, true, true, "flag"},
		{"flag beats config file", true, false, true, "flag"},
		{"env beats config file", false, true, true, "env"},
		{"config file beats default", false, false, true, "file"},
		{"default", false, false, false, "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, xdg := isolateEnv(t)
			dir := t.TempDir()
			paths := map[string]string{
				"flag":    filepath.Join(dir, "flag.db"),
				"env":     filepath.Join(dir, "env.db"),
				"file":    filepath.Join(dir, "file.db"),
				"default": filepath.Join(xdg, "aiproxy", "aiproxy.db"),
			}
			cfg := filepath.Join(dir, "aiproxy.yaml")
			if err := os.WriteFile(cfg, []byte("db: "+paths["file"]+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var args []string
			if tc.flag {
				args = append(args, "--db", paths["flag"])
			}
			if tc.env {
				t.Setenv("AIPROXY_DB", paths["env"])
			}
			if tc.configFile {
				args = append(args, "--config", cfg)
			}
			runOK(t, append(args, "user", "create", "alice")...)

			var used []string
			for name, p := range paths {
				if _, err := os.Stat(p); err == nil {
					used = append(used, name)
				}
			}
			if diff := cmp.Diff([]string{tc.want}, used); diff != "" {
				t.Errorf("databases created (-want +got):\n%s", diff)
			}
			if u := listUsers(t, paths[tc.want]); len(u) != 1 || u[0].Name != "alice" {
				t.Errorf("users in the %s database = %+v, want alice", tc.want, u)
			}
		})
	}
}

func TestConfig_envConfigFile(t *testing.T) {
	isolateEnv(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "from-config.db")
	cfg := filepath.Join(dir, "aiproxy.yaml")
	if err := os.WriteFile(cfg, []byte("db: "+db+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AIPROXY_CONFIG", cfg)
	runOK(t, "user", "create", "alice")
	if _, err := os.Stat(db); err != nil {
		t.Errorf("AIPROXY_CONFIG's db was not used: %v", err)
	}
}

func TestConfig_errors(t *testing.T) {
	isolateEnv(t)
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("db: [unclosed\n  - x: {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing config file", []string{"--config", filepath.Join(dir, "nope.yaml"), "user", "list"}, "read config " + filepath.Join(dir, "nope.yaml")},
		{"bad YAML", []string{"--config", badYAML, "user", "list"}, "read config " + badYAML},
		{"unknown flag", []string{"--database", "x.db", "user", "list"}, "unknown flag: --database"},
		{"unknown command", []string{"--db", filepath.Join(dir, "a.db"), "usr", "list"}, `unknown command "usr" for "aiproxy"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkFailed(t, run(t, "", tc.args...), tc.want)
		})
	}
}

func TestDefaultDBPath(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "darwin" {
		t.Skip("XDG layout only")
	}
	t.Run("XDG_DATA_HOME", func(t *testing.T) {
		_, xdg := isolateEnv(t)
		checkDefaultPath(t, filepath.Join(xdg, "aiproxy", "aiproxy.db"))
	})
	t.Run("HOME without XDG_DATA_HOME", func(t *testing.T) {
		home, _ := isolateEnv(t)
		os.Unsetenv("XDG_DATA_HOME")
		checkDefaultPath(t, filepath.Join(home, ".local", "share", "aiproxy", "aiproxy.db"))
	})
	t.Run("relative XDG_DATA_HOME is ignored", func(t *testing.T) {
		home, _ := isolateEnv(t)
		t.Setenv("XDG_DATA_HOME", "relative/data")
		checkDefaultPath(t, filepath.Join(home, ".local", "share", "aiproxy", "aiproxy.db"))
	})
}

// checkDefaultPath runs commands without --db from two working folders and
// checks they share the database at want, with private modes.
func checkDefaultPath(t *testing.T, want string) {
	t.Helper()
	if got := defaultDBPath(); got != want {
		t.Errorf("defaultDBPath() = %q, want %q", got, want)
	}
	t.Chdir(t.TempDir())
	runOK(t, "user", "create", "alice")
	t.Chdir(t.TempDir())
	runOK(t, "user", "create", "bob")
	if out := runOK(t, "user", "list"); !strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Errorf("user list from a third folder:\n%s\nwant alice and bob", out)
	}
	var names []string
	for _, u := range listUsers(t, want) {
		names = append(names, u.Name)
	}
	if diff := cmp.Diff([]string{"alice", "bob"}, names); diff != "" {
		t.Errorf("users in %s (-want +got):\n%s", want, diff)
	}
	checkMode(t, filepath.Dir(want), 0o700)
	checkMode(t, want, 0o600)
	for _, side := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(want + side); err == nil {
			checkMode(t, want+side, 0o600)
		}
	}
	// The --help text names the same default.
	if out := runOK(t, "--help"); !bytes.Contains([]byte(out), []byte(want)) {
		t.Errorf("--help does not name the default database %s", want)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %o, want %o", path, got, want)
	}
}

// TestDB_unusable checks that a database path that is a folder, or a file
// that is not a database, fails every command with one line and is left as
// it was.
func TestDB_unusable(t *testing.T) {
	t.Parallel()
	garbage := bytes.Repeat([]byte("this is not an SQLite database\x00\xff"), 200)
	commands := [][]string{
		{"user", "create", "alice"},
		{"user", "list"},
		{"user", "list", "--json"},
		{"user", "delete", "alice"},
		{"provider", "add", "api.openai.com", "sk-1234"},
		{"provider", "list"},
		{"stats"},
		{"backup", "backup.db"},
	}
	for _, args := range commands {
		name := strings.Join(args, " ")
		if args[0] == "backup" {
			args = []string{"backup", filepath.Join(t.TempDir(), "backup.db")}
		}
		t.Run("folder/"+name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			checkFailed(t, run(t, "", append([]string{"--db", dir}, args...)...), "database path "+dir+" is a directory")
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("folder given as --db now holds %d entries, want none", len(entries))
			}
		})
		t.Run("corrupt/"+name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			if err := os.WriteFile(db, garbage, 0o600); err != nil {
				t.Fatal(err)
			}
			checkFailed(t, run(t, "", append([]string{"--db", db}, args...)...), "is not an aiproxy database or is corrupt")
			got, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, garbage) {
				t.Errorf("corrupt database file changed")
			}
		})
	}
}
