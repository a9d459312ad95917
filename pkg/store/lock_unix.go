//go:build unix

package store

import (
	"errors"
	"os"
	"syscall"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// lockServer takes an advisory lock on lockPath, held until release is
// called or the process dies; a second one, from any process, fails at
// once with ECONFLICT. dbPath names the database in messages.
func lockServer(lockPath, dbPath string) (release func(), err error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "create lock file: %v", unwrapPathError(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "another aiproxy serve is already running on %s", dbPath)
		}
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "lock %s: %v", dbPath, err)
	}
	return func() { f.Close() }, nil
}
