//go:build windows

package store

import (
	"os"

	"golang.org/x/sys/windows"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// lockServer takes a lock on lockPath, held until release is called or the
// process dies; a second one fails at once with ECONFLICT. dbPath names the
// database in messages.
func lockServer(lockPath, dbPath string) (release func(), err error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "create lock file: %v", unwrapPathError(err))
	}
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		f.Close()
		return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "another aiproxy serve is already running on %s", dbPath)
	}
	return func() { f.Close() }, nil
}
