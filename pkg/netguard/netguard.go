// Package netguard refuses connections to special-purpose IP addresses:
// loopback, private, shared (carrier-grade NAT, where cloud metadata
// services such as 100.100.100.200 live), link-local (169.254.169.254),
// documentation, benchmarking, multicast, reserved, and IPv6 forms that
// carry one of those IPv4 addresses inside them.
//
// It is meant for net.Dialer.Control, which runs on the address actually
// dialled, after name resolution: a name that resolves to a public address
// when it is checked and to 127.0.0.1 when it is dialled (DNS rebinding)
// is refused all the same.
//
//	d := &net.Dialer{Control: netguard.Control}
//
// The guard sees only the address the socket connects to. When requests go
// through an HTTP proxy (HTTPS_PROXY), that is the proxy's address, and the
// proxy resolves and connects to the upstream itself.
package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrDenied is the error Control returns for a refused address, wrapped
// with the address and the range it is in ("127.0.0.1:80: special-purpose
// address refused: 127.0.0.0/8 loopback, RFC 1122"). Test for it with
// errors.Is.
var ErrDenied = errors.New("special-purpose address refused")

// Denied reports whether ip is in one of the refused ranges (v4Ranges and
// v6Ranges in ranges.go). The zero Addr is denied; a zone (fe80::1%eth0) is ignored.
func Denied(ip netip.Addr) bool {
	_, denied := check(ip)
	return denied
}

// Control is a net.Dialer.Control function: it returns an error wrapping
// ErrDenied when the address being dialled ("ip:port", already resolved)
// is Denied, and for any address that is not an IP and port (a Unix
// socket path, say), so that the guard fails closed. It does not touch c.
func Control(network, address string, c syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%s %s: %w: not an IP address and port", network, address, ErrDenied)
	}
	if why, denied := check(ap.Addr()); denied {
		return fmt.Errorf("%s: %w: %s", address, ErrDenied, why)
	}
	return nil
}

// check returns whether ip is denied and, if so, why: the range and its
// registry name.
func check(ip netip.Addr) (why string, denied bool) {
	if !ip.IsValid() {
		return "not a valid address", true
	}
	ip = ip.WithZone("")
	if ip.Is4In6() {
		// ::ffff:a.b.c.d is a.b.c.d, reached over IPv4 by a dual-stack
		// socket: it is what it carries.
		v4 := ip.Unmap()
		if why, denied := check(v4); denied {
			return fmt.Sprintf("::ffff:0:0/96 IPv4-mapped %s: %s", v4, why), true
		}
		return "", false
	}
	if ip.Is4() {
		for _, r := range v4Ranges {
			if r.Prefix.Contains(ip) {
				return r.String(), true
			}
		}
		return "", false
	}
	for _, r := range v6Ranges {
		if !r.Prefix.Contains(ip) {
			continue
		}
		if r.embedded == nil {
			return r.String(), true
		}
		v4 := r.embedded(ip)
		if why, denied := check(v4); denied {
			return fmt.Sprintf("%s; carries %s: %s", r, v4, why), true
		}
		return "", false
	}
	if !globalUnicast.Contains(ip) {
		return "outside " + globalUnicast.String() + ", the only IPv6 space IANA allocates for global unicast", true
	}
	return "", false
}
