package netguard

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// neighbour is an address just outside a range (the one before its first
// address or after its last) and whether it is denied all the same, by
// another range.
type neighbour struct {
	addr   string
	denied bool
}

// rangeCases is one case per refused range: its first and last addresses
// must be denied, and each neighbour must be adjacent to it and have the
// given outcome. A range whose neighbours are all in other refused ranges
// (or outside 2000::/3) says so.
var rangeCases = []struct {
	prefix     string
	neighbours []neighbour
}{
	{"0.0.0.0/8", []neighbour{{"1.0.0.0", false}}},
	{"10.0.0.0/8", []neighbour{{"9.255.255.255", false}, {"11.0.0.0", false}}},
	{"100.64.0.0/10", []neighbour{{"100.63.255.255", false}, {"100.128.0.0", false}}},
	{"127.0.0.0/8", []neighbour{{"126.255.255.255", false}, {"128.0.0.0", false}}},
	{"169.254.0.0/16", []neighbour{{"169.253.255.255", false}, {"169.255.0.0", false}}},
	{"172.16.0.0/12", []neighbour{{"172.15.255.255", false}, {"172.32.0.0", false}}},
	{"192.0.0.0/24", []neighbour{{"191.255.255.255", false}, {"192.0.1.0", false}}},
	{"192.0.2.0/24", []neighbour{{"192.0.1.255", false}, {"192.0.3.0", false}}},
	{"192.88.99.0/24", []neighbour{{"192.88.98.255", false}, {"192.88.100.0", false}}},
	{"192.168.0.0/16", []neighbour{{"192.167.255.255", false}, {"192.169.0.0", false}}},
	{"198.18.0.0/15", []neighbour{{"198.17.255.255", false}, {"198.20.0.0", false}}},
	{"198.51.100.0/24", []neighbour{{"198.51.99.255", false}, {"198.51.101.0", false}}},
	{"203.0.113.0/24", []neighbour{{"203.0.112.255", false}, {"203.0.114.0", false}}},
	{"224.0.0.0/4", []neighbour{{"223.255.255.255", false}, {"240.0.0.0", true}}},
	{"240.0.0.0/4", []neighbour{{"239.255.255.255", true}}}, // nothing after it
	{"255.255.255.255/32", []neighbour{{"255.255.255.254", true}}},

	{"::/128", []neighbour{{"::1", true}}},
	{"::1/128", []neighbour{{"::", true}, {"::2", true}}},
	// 64:ff9b::/96 and 2002::/16 are denied here at their first and last
	// addresses because those carry 0.0.0.0 and 255.255.255.255; what
	// they carry is tested in TestEmbedded.
	{"64:ff9b::/96", []neighbour{{"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"64:ff9b::1:0:0", true}}},
	{"64:ff9b:1::/48", []neighbour{{"64:ff9b:0:ffff:ffff:ffff:ffff:ffff", true}, {"64:ff9b:2::", true}}},
	{"100::/64", []neighbour{{"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"100:0:0:1::", true}}},
	{"2001::/23", []neighbour{{"2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"2001:200::", false}}},
	{"2001:db8::/32", []neighbour{{"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"2001:db9::", false}}},
	{"2002::/16", []neighbour{{"2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"2003::", false}}},
	{"3fff::/20", []neighbour{{"3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"3fff:1000::", false}}},
	{"5f00::/16", []neighbour{{"5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"5f01::", true}}},
	{"fc00::/7", []neighbour{{"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"fe00::", true}}},
	{"fe80::/10", []neighbour{{"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"fec0::", true}}},
	{"fec0::/10", []neighbour{{"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"ff00::", true}}},
	{"ff00::/8", []neighbour{{"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}}}, // nothing after it
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestRanges(t *testing.T) {
	tested := map[netip.Prefix]bool{}
	for _, c := range rangeCases {
		pfx := netip.MustParsePrefix(c.prefix)
		tested[pfx] = true
		first, last := pfx.Addr(), lastAddr(pfx)
		for _, a := range []netip.Addr{first, last} {
			if !Denied(a) {
				t.Errorf("%s: %s is allowed, want denied", c.prefix, a)
			}
		}
		for _, n := range c.neighbours {
			a := netip.MustParseAddr(n.addr)
			if a != first.Prev() && a != last.Next() {
				t.Errorf("%s: %s is not next to the range (%s…%s)", c.prefix, a, first, last)
			}
			if got := Denied(a); got != n.denied {
				t.Errorf("%s: Denied(%s) = %v, want %v", c.prefix, a, got, n.denied)
			}
		}
	}
	// Every range of the list has a case, and every case a range.
	for _, e := range append(append([]entry{}, v4Ranges...), v6Ranges...) {
		if !tested[e.Prefix] {
			t.Errorf("%s has no case in rangeCases", e.Prefix)
		}
		delete(tested, e.Prefix)
	}
	for p := range tested {
		t.Errorf("rangeCases has %s, which is not in the list", p)
	}
}

func TestAddresses(t *testing.T) {
	for _, c := range []struct {
		addr   string
		denied bool
	}{
		{"127.0.0.1", true},
		{"0.0.0.0", true},
		{"169.254.169.254", true}, // AWS, GCP, Azure metadata
		{"100.100.100.200", true}, // Alibaba Cloud metadata
		{"fd00:ec2::254", true},   // AWS metadata over IPv6
		{"10.1.2.3", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"::", true},
		{"::1", true},
		{"fe80::1%eth0", true},
		{"ff02::1", true},
		{"::127.0.0.1", true}, // deprecated IPv4-compatible
		{"::8.8.8.8", true},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", true}, // Teredo
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"104.18.6.192", false},
		{"192.31.196.1", false}, // AS112, globally reachable
		{"2606:4700:4700::1111", false},
		{"2a00:1450:4001:80e::200a", false},
		{"2620:4f:8000::1", false}, // AS112, globally reachable
		{"2001:4860:4860::8888", false},
	} {
		if got := Denied(netip.MustParseAddr(c.addr)); got != c.denied {
			t.Errorf("Denied(%s) = %v, want %v", c.addr, got, c.denied)
		}
	}
	if !Denied(netip.Addr{}) {
		t.Error("the zero Addr is allowed, want denied")
	}
}

// TestEmbedded: IPv4-mapped, NAT64 and 6to4 addresses are judged by the
// IPv4 address they carry; local-use NAT64 is denied whatever it carries.
func TestEmbedded(t *testing.T) {
	for _, c := range []struct {
		addr   string
		denied bool
	}{
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"::ffff:8.8.8.8", false},

		{"64:ff9b::127.0.0.1", true},
		{"64:ff9b::10.0.0.1", true},
		{"64:ff9b::169.254.169.254", true},
		{"64:ff9b::100.100.100.200", true},
		{"64:ff9b::192.0.2.1", true},
		{"64:ff9b::8.8.8.8", false},
		{"64:ff9b::1.1.1.1", false},

		{"64:ff9b:1::8.8.8.8", true},
		{"64:ff9b:1::10.0.0.1", true},

		{"2002:7f00:1::1", true},     // 127.0.0.1
		{"2002:a00:1::1", true},      // 10.0.0.1
		{"2002:a9fe:a9fe::1", true},  // 169.254.169.254
		{"2002:c000:201::", true},    // 192.0.2.1
		{"2002:808:808::1", false},   // 8.8.8.8
		{"2002:101:101:1::1", false}, // 1.1.1.1
	} {
		if got := Denied(netip.MustParseAddr(c.addr)); got != c.denied {
			t.Errorf("Denied(%s) = %v, want %v", c.addr, got, c.denied)
		}
	}
}

func TestControl(t *testing.T) {
	for _, c := range []struct {
		network, address string
		denied           bool
	}{
		{"tcp4", "127.0.0.1:80", true},
		{"tcp4", "169.254.169.254:80", true},
		{"tcp6", "[::1]:443", true},
		{"tcp6", "[fe80::1%eth0]:443", true},
		{"tcp6", "[::ffff:10.0.0.1]:443", true},
		{"tcp6", "[64:ff9b::a00:1]:443", true},
		{"unix", "/run/docker.sock", true}, // not an IP: fails closed
		{"tcp4", "8.8.8.8:443", false},
		{"tcp6", "[2606:4700:4700::1111]:443", false},
		{"tcp6", "[::ffff:8.8.8.8]:443", false},
	} {
		err := Control(c.network, c.address, nil)
		if c.denied {
			if !errors.Is(err, ErrDenied) {
				t.Errorf("Control(%s, %s) = %v, want ErrDenied", c.network, c.address, err)
			} else if !strings.Contains(err.Error(), c.address) {
				t.Errorf("Control(%s, %s) = %q, which does not name the address", c.network, c.address, err)
			}
		} else if err != nil {
			t.Errorf("Control(%s, %s) = %v, want nil", c.network, c.address, err)
		}
	}
	err := Control("tcp4", "100.100.100.200:80", nil)
	if err == nil || !strings.Contains(err.Error(), "100.64.0.0/10") {
		t.Errorf("the error names no range: %v", err)
	}
}

// TestDialer: a Dialer with Control refuses a loopback listener without
// connecting to it, whether given the address or a name that resolves to
// it.
func TestDialer(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d := &net.Dialer{Control: Control, Timeout: 5 * time.Second}
	for _, addr := range []string{ln.Addr().String(), net.JoinHostPort("localhost", port)} {
		c, err := d.Dial("tcp", addr)
		if err == nil {
			c.Close()
			t.Fatalf("Dial(%s) connected", addr)
		}
		if !errors.Is(err, ErrDenied) {
			t.Errorf("Dial(%s) = %v, want ErrDenied", addr, err)
		}
	}
	// Control runs before connect(2): nothing reached the listener.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Fatal("the listener accepted a connection")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Accept: %v", err)
	}
}
