//go:build windows

package store

import (
	"os"

	"golang.org/x/sys/windows"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// ClaimServer takes the lock that marks the one `serve` process of this
// database, held until release is called or the process dies. A second
// claim fails at once with ECONFLICT, also through another name of the
// same file (a symbolic link): the lock file is named after the real path.
func (d *DB) ClaimServer() (release func(), err error) {
	f, err := os.OpenFile(d.real+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "create lock file: %v", unwrapPathError(err))
	}
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		f.Close()
		return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "another aiproxy serve is already running on %s", d.path)
	}
	return func() { f.Close() }, nil
}
