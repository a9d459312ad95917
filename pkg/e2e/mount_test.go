//go:build unix

package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needRoot skips a test that must mount file systems or change users.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (mount, or running aiproxy as another user)")
	}
}

// mount runs mount(8) with args, skipping the test when mounting is not
// permitted here (an unprivileged container), and unmounts dir in
// t.Cleanup, which runs before t.TempDir's removal and after the cleanup of
// processes started later.
func mount(t *testing.T, dir string, args ...string) {
	t.Helper()
	needRoot(t)
	out, err := exec.Command("mount", append(args, dir)...).CombinedOutput()
	if err != nil {
		t.Skipf("skipped: mount %s not permitted here: %v: %s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s; unmounting lazily", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
}

// tmpfs mounts a tmpfs of size (e.g. "4m") on a new folder and returns it.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mount(t, dir, "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs")
	return dir
}

// readOnlyView bind-mounts src read-only on a new folder and returns it:
// the same files, seen through a read-only mount.
func readOnlyView(t *testing.T, src string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mount(t, dir, "--bind", src)
	out, err := exec.Command("mount", "-o", "remount,ro,bind", dir).CombinedOutput()
	if err != nil {
		t.Skipf("skipped: read-only remount not permitted here: %v: %s", err, out)
	}
	return dir
}

// fill writes a file in dir until the file system is full and returns its
// path; removing it frees the space.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 16, 4096, 512, 1} {
		buf := make([]byte, chunk)
		for i := 0; i < 1<<20; i++ {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
	}
	if _, err := f.Write([]byte{0}); err == nil {
		t.Fatalf("fill %s: still room after writing %d bytes", dir, fileSize(path))
	}
	return path
}
