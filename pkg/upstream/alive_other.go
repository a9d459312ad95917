//go:build !unix

package upstream

import "net"

// alive cannot peek here; a connection the upstream closed while idle
// fails its next request.
func alive(net.Conn) bool { return true }
