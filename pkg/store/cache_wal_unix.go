//go:build unix

package store

import (
	"errors"
	"os"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// walHeader is the first copy of the WAL-index header: the first 48 bytes
// of the -shm file (https://sqlite.org/walformat.html, section 2.1). Every
// commit increments its iChange field and rewrites it, second copy first,
// so a header equal to an earlier one means that nothing was committed in
// between. (A header that moved without a commit, after a recovery or a
// WAL restart, only costs one auth_version read.)
type walHeader [12]uint32

// walIndex is a read-only mapping of the start of a database's -shm file,
// shared with SQLite's own mapping of it.
//
// Its descriptor stays open until closeFile, after SQLite's connections are
// closed: close(2) of any descriptor of a file drops every POSIX lock the
// process holds on that file, SQLite's wal-index locks included, and
// another process would then rebuild the wal-index under this one.
type walIndex struct {
	f   *os.File
	mem []byte // nil: not mapped, the cache reads auth_version instead
}

// walMap is how much of the -shm file is mapped: one page, which holds the
// header. SQLite never shrinks the file below 32 KiB while a connection,
// such as the cache's, has it open.
const walMap = 4096

// openWALIndex maps path. Even when mapping fails it returns the opened
// file (if any) for closeFile, since closing it now would drop SQLite's locks.
func openWALIndex(path string) (*walIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	w := &walIndex{f: f}
	fi, err := f.Stat()
	if err != nil {
		return w, err
	}
	if fi.Size() < walMap {
		return w, errors.New("wal-index is not initialised")
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, walMap, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return w, err
	}
	w.mem = mem
	return w, nil
}

// read copies the header into h. It reports false if the mapping faulted
// (the file was truncated under it), after which it must not be used.
func (w *walIndex) read(h *walHeader) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	if w.mem == nil {
		return false
	}
	p := unsafe.Pointer(unsafe.SliceData(w.mem))
	for i := range h {
		h[i] = atomic.LoadUint32((*uint32)(unsafe.Add(p, 4*i)))
	}
	return true
}

// unmap ends the mapping; the cache then reads auth_version alone.
func (w *walIndex) unmap() {
	if w.mem != nil {
		syscall.Munmap(w.mem)
		w.mem = nil
	}
}

// closeFile unmaps and closes the descriptor. Call it only once every
// SQLite connection of this process to the database is closed.
func (w *walIndex) closeFile() {
	w.unmap()
	w.f.Close()
}
