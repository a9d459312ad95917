//go:build unix

package upstream

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection is still open: the upstream has
// neither closed it nor sent anything unasked. One non-blocking peek, so
// that a request is never written to a connection the upstream already
// closed (it could not be retried: the upstream may have read it).
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	open := true
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			open = true // nothing to read: the normal idle state
		case err != nil || n == 0 || n > 0:
			open = false // closed, reset, or unsolicited bytes
		}
		return true
	})
	return err == nil && open
}
