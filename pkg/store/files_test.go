package store_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// TestClaimServer_ThroughSymlink: a second serve cannot start on the same
// database through another name of it, a link to the file or to its folder
// (issue 11, item 10).
func TestClaimServer_ThroughSymlink(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links need privileges on Windows")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "aiproxy.db")
	first := openTestStore(t, path)
	release, err := first.ClaimServer()
	if err != nil {
		t.Fatalf("ClaimServer() error = %v", err)
	}
	defer release()

	fileLink := filepath.Join(dir, "link.db")
	if err := os.Symlink(path, fileLink); err != nil {
		t.Fatal(err)
	}
	folderLink := filepath.Join(dir, "folder")
	if err := os.Symlink(filepath.Join(dir, "data"), folderLink); err != nil {
		t.Fatal(err)
	}
	relLink := filepath.Join(dir, "data", "rel.db")
	if err := os.Symlink("aiproxy.db", relLink); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{fileLink, filepath.Join(folderLink, "aiproxy.db"), relLink} {
		second := openTestStore(t, name)
		if rel, err := second.ClaimServer(); err == nil {
			rel()
			t.Errorf("ClaimServer() through %s succeeded while another serve holds %s", name, path)
		} else {
			wantCode(t, "ClaimServer() through "+name, err, aiproxy.ECONFLICT)
		}
	}
	// The link opened the same database, not a new one beside it.
	createUser(t, openTestStore(t, fileLink), "via-link", nil)
	if _, err := first.UserByName(t.Context(), "via-link"); err != nil {
		t.Errorf("user created through the link: UserByName() error = %v", err)
	}
	if _, err := os.Stat(fileLink + ".lock"); err == nil {
		t.Errorf("a lock file was made beside the link: %s", fileLink+".lock")
	}
}

// TestOpen_TightensWideModes: an existing database whose file, -wal or
// -shm others may read (0644, as cp or an older aiproxy may leave it) is
// tightened to 0600 when opened, with a warning naming each file.
func TestOpen_TightensWideModes(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes on Windows")
	}
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	holder := openTestStore(t, path) // keeps -wal and -shm in place
	createUser(t, holder, "alice", nil)
	files := []string{path, path + "-wal", path + "-shm"}
	for _, f := range files {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	d, err := store.Open(t.Context(), path, store.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	defer d.Close()
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("mode of %s after Open = %#o, want 0600", filepath.Base(f), got)
		}
		if !strings.Contains(logs.String(), "file="+f+" ") {
			t.Errorf("no warning names %s; log:\n%s", f, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("log has no warning:\n%s", logs.String())
	}

	// An owner-only file is left alone, without a word.
	logs.Reset()
	d2, err := store.Open(t.Context(), path, store.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("second Open() error = %v", err)
	}
	d2.Close()
	if strings.Contains(logs.String(), "readable by others") {
		t.Errorf("second Open warned again:\n%s", logs.String())
	}
}
