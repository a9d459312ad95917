// Package keys makes, hashes and compares user keys. A user key is "sk-cfw"
// followed by 45 characters of [A-Za-z0-9] drawn from crypto/rand; only its
// SHA-256 hash and a short hint are ever stored.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Prefix starts every user key.
const Prefix = "sk-cfw"

// Len is the length of a user key: the prefix plus 45 random characters.
const Len = len(Prefix) + 45

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// New returns a fresh user key. It reads crypto/rand, which never fails on
// the platforms Go supports.
func New() string {
	b := make([]byte, Len)
	copy(b, Prefix)
	var buf [64]byte
	for i := len(Prefix); i < Len; {
		rand.Read(buf[:])
		for _, c := range buf {
			// 62*4 = 248: rejecting bytes >= 248 keeps every letter equally likely.
			if c >= 248 {
				continue
			}
			b[i] = alphabet[c%62]
			i++
			if i == Len {
				break
			}
		}
	}
	return string(b)
}

// Valid reports whether k has the shape of a user key. It lets the proxy
// refuse garbage without touching the database.
func Valid(k string) bool {
	if len(k) != Len || k[:len(Prefix)] != Prefix {
		return false
	}
	for i := len(Prefix); i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Hash returns the hex SHA-256 of a key: what the store keeps and indexes.
func Hash(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:])
}

// Hint returns a short, safe reminder of a key for listings: its first six
// characters and last four, "sk-cfw…a1b2". Keys of 12 characters or fewer
// show only their last two.
func Hint(k string) string {
	if len(k) <= 12 {
		if len(k) <= 4 {
			return "…"
		}
		return "…" + k[len(k)-2:]
	}
	return k[:6] + "…" + k[len(k)-4:]
}

// Equal compares two secrets in constant time.
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Secret is a key that logs and prints as its hint only.
type Secret string

func (s Secret) String() string { return Hint(string(s)) }

// Format makes every fmt verb print the hint: without it %#v, and verbs
// that do not apply to strings such as %d, print the raw key and bypass
// String.
func (s Secret) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), Hint(string(s)))
}

// LogValue implements slog.LogValuer so a Secret never reaches a log whole.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Hint(string(s))) }
