//go:build unix

package store

import (
	"errors"
	"os"
	"syscall"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// ClaimServer takes the advisory lock that marks the one `serve` process
// of this database, held until release is called or the process dies.
// A second claim, from any process, fails at once with ECONFLICT, also
// through another name of the same file (a symbolic link): the lock file is
// named after the database's real path.
func (d *DB) ClaimServer() (release func(), err error) {
	f, err := os.OpenFile(d.real+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "create lock file: %v", unwrapPathError(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, aiproxy.Errorf(aiproxy.ECONFLICT, "another aiproxy serve is already running on %s", d.path)
		}
		return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "lock %s: %v", d.path, err)
	}
	return func() { f.Close() }, nil
}
