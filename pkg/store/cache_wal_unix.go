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
// WAL restart, only costs one data_version read.)
type walHeader [12]uint32

// walIndex is a read-only mapping of the start of a database's -shm file,
// shared with SQLite's own mapping of it.
type walIndex struct {
	mem []byte
}

// walMap is how much of the -shm file is mapped: one page, which holds the
// header. SQLite never shrinks the file below 32 KiB while a connection,
// such as the cache's, has it open.
const walMap = 4096

func openWALIndex(path string) (*walIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < walMap {
		return nil, errors.New("wal-index is not initialised")
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, walMap, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return &walIndex{mem: mem}, nil
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
	p := unsafe.Pointer(unsafe.SliceData(w.mem))
	for i := range h {
		h[i] = atomic.LoadUint32((*uint32)(unsafe.Add(p, 4*i)))
	}
	return true
}

func (w *walIndex) close() {
	syscall.Munmap(w.mem)
}
