package netguard

import (
	"net/netip"
)

// The refused ranges, from the IANA special-purpose address registries
// (RFC 6890, RFC 8190):
//
//   - IPv4 Special-Purpose Address Registry,
//     https://www.iana.org/assignments/iana-ipv4-special-registry/
//   - IPv6 Special-Purpose Address Registry,
//     https://www.iana.org/assignments/iana-ipv6-special-registry/
//
// and, for what those leave out, the address-space registries:
//
//   - IPv4 Multicast Address Space Registry (224.0.0.0/4, RFC 5771),
//     https://www.iana.org/assignments/multicast-addresses/
//   - IPv6 Address Space registry, where only 2000::/3 is global unicast
//     and the rest is reserved by the IETF, unique-local, link-local or
//     multicast, https://www.iana.org/assignments/ipv6-address-space/
//
// An upstream API has no business at any of these addresses, so a block is
// refused whole even where the registry marks a few addresses inside it
// globally reachable (the PCP and TURN anycast addresses in 192.0.0.0/24;
// AMT, AS112 and the anycast addresses in 2001::/23).
//
// Deliberately allowed, being globally reachable anycast services with
// nothing behind them to protect: 192.31.196.0/24 (AS112-v4, RFC 7535),
// 192.52.193.0/24 (AMT, RFC 7450), 192.175.48.0/24 and 2620:4f:8000::/48
// (AS112 direct delegation, RFC 7534).
//
// Addresses that carry an IPv4 address are judged by it:
//
//   - ::ffff:0:0/96, IPv4-mapped (RFC 4291): the socket connects to the
//     IPv4 address, so it is allowed exactly when that address is.
//   - 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052): the IPv4
//     address is the last 32 bits. Denied if it is denied, allowed if it is
//     public (a NAT64 gateway then reaches a public address; RFC 6052 §3.1
//     forbids the well-known prefix for non-global IPv4 addresses anyway).
//   - 2002::/16, 6to4 (RFC 3056): the IPv4 address is bits 16–47; denied
//     if it is denied.
//   - 64:ff9b:1::/48, local-use NAT64 (RFC 8215), is denied whole. The
//     registry marks it not globally reachable, and its operator chooses
//     where the IPv4 address sits (RFC 6052 allows prefixes of /48, /56,
//     /64 or /96 inside it, each putting it elsewhere), so reading it at
//     one place could pass a private address written for another layout;
//     checking every layout denies nearly every address anyway, since the
//     unused positions are zero and 0.0.0.0/8 is denied.
//   - 2001::/32, Teredo (RFC 4380), carries an obfuscated IPv4 address; it
//     is inside 2001::/23, which is denied whole.
var v4Ranges = []entry{
	{p("0.0.0.0/8"), "\"this network\"", "RFC 791", nil},
	{p("10.0.0.0/8"), "private-use", "RFC 1918", nil},
	{p("100.64.0.0/10"), "shared address space (carrier-grade NAT; cloud metadata at 100.100.100.200)", "RFC 6598", nil},
	{p("127.0.0.0/8"), "loopback", "RFC 1122", nil},
	{p("169.254.0.0/16"), "link-local (cloud metadata at 169.254.169.254)", "RFC 3927", nil},
	{p("172.16.0.0/12"), "private-use", "RFC 1918", nil},
	{p("192.0.0.0/24"), "IETF protocol assignments", "RFC 6890", nil},
	{p("192.0.2.0/24"), "documentation (TEST-NET-1)", "RFC 5737", nil},
	{p("192.88.99.0/24"), "deprecated 6to4 relay anycast", "RFC 7526", nil},
	{p("192.168.0.0/16"), "private-use", "RFC 1918", nil},
	{p("198.18.0.0/15"), "benchmarking", "RFC 2544", nil},
	{p("198.51.100.0/24"), "documentation (TEST-NET-2)", "RFC 5737", nil},
	{p("203.0.113.0/24"), "documentation (TEST-NET-3)", "RFC 5737", nil},
	{p("224.0.0.0/4"), "multicast", "RFC 5771", nil},
	{p("255.255.255.255/32"), "limited broadcast", "RFC 8190, RFC 919", nil}, // before 240.0.0.0/4, which holds it
	{p("240.0.0.0/4"), "reserved", "RFC 1112", nil},
}

// v6Ranges are checked in order; an address in none of them is still
// denied if it is outside globalUnicast. ::ffff:0:0/96 is handled before
// them (check).
var v6Ranges = []entry{
	{p("::/128"), "unspecified", "RFC 4291", nil},
	{p("::1/128"), "loopback", "RFC 4291", nil},
	{p("64:ff9b::/96"), "NAT64 well-known prefix", "RFC 6052", last32},
	{p("64:ff9b:1::/48"), "local-use NAT64", "RFC 8215", nil},
	{p("100::/64"), "discard-only", "RFC 6666", nil},
	{p("2001::/23"), "IETF protocol assignments (Teredo, benchmarking, ORCHID…)", "RFC 2928", nil},
	{p("2001:db8::/32"), "documentation", "RFC 3849", nil},
	{p("2002::/16"), "6to4", "RFC 3056", bits16to47},
	{p("3fff::/20"), "documentation", "RFC 9637", nil},
	{p("5f00::/16"), "SRv6 SIDs", "RFC 9602", nil},
	{p("fc00::/7"), "unique-local (AWS metadata at fd00:ec2::254)", "RFC 4193", nil},
	{p("fe80::/10"), "link-local", "RFC 4291", nil},
	{p("fec0::/10"), "deprecated site-local", "RFC 3879", nil},
	{p("ff00::/8"), "multicast", "RFC 4291", nil},
}

// globalUnicast is the IPv6 space IANA allocates for global unicast; the
// rest (besides what v6Ranges names) is reserved by the IETF, including
// the deprecated IPv4-compatible ::/96 (RFC 4291 §2.5.5.1).
var globalUnicast = p("2000::/3")

// entry is one refused range. An entry with embedded is refused only when
// the IPv4 address that embedded extracts is.
type entry struct {
	Prefix   netip.Prefix
	Name     string
	Ref      string
	embedded func(netip.Addr) netip.Addr
}

func (e entry) String() string { return e.Prefix.String() + " " + e.Name + ", " + e.Ref }

func p(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// last32 is the IPv4 address in the last 32 bits (RFC 6052 /96 layout).
func last32(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[12:16]))
}

// bits16to47 is a 6to4 address's IPv4 address (RFC 3056 §2).
func bits16to47(ip netip.Addr) netip.Addr {
	b := ip.As16()
	return netip.AddrFrom4([4]byte(b[2:6]))
}
