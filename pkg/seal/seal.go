// Package seal encrypts short secrets, such as provider keys, for storage:
// AES-256-GCM from the standard library with a random 12-byte nonce per
// value, bound to associated data that names where the value belongs, so a
// sealed value copied to another place does not open there.
//
// A sealed value is one version byte (1), the nonce, then the ciphertext
// and its 16-byte tag. A later format takes another version byte.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of a secret key in bytes.
const KeySize = 32

// version1 is the first byte of a value sealed in the format below.
const version1 byte = 1

const (
	nonceSize = 12
	tagSize   = 16
	// Overhead is how many bytes sealing adds to a value.
	Overhead = 1 + nonceSize + tagSize
)

// ErrOpen is returned by Open for a value that this key did not seal with
// this associated data, or that was changed since: a wrong key, a value
// moved elsewhere, or damage. AES-GCM cannot tell these apart.
var ErrOpen = errors.New("seal: cannot open value: wrong key, wrong place or damaged")

// Key seals and opens values. It is safe for concurrent use.
type Key struct {
	aead cipher.AEAD
}

// NewKey returns the key for a secret of KeySize bytes.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) != KeySize {
		return nil, fmt.Errorf("seal: secret key is %d bytes, want %d", len(secret), KeySize)
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	// The standard library draws the nonce from crypto/rand and puts it
	// before the ciphertext.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &Key{aead: aead}, nil
}

// ParseKey returns the key whose secret text holds in base64 (standard or
// URL alphabet, padded or not). Whitespace around it is ignored. Errors
// never quote the text.
func ParseKey(text []byte) (*Key, error) {
	s := strings.TrimSpace(string(text))
	if s == "" {
		return nil, errors.New("secret key is empty: want the base64 encoding of 32 random bytes")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != KeySize {
			return nil, fmt.Errorf("secret key decodes to %d bytes: want the base64 encoding of %d random bytes", len(b), KeySize)
		}
		return NewKey(b)
	}
	return nil, errors.New("secret key is not base64: want the base64 encoding of 32 random bytes")
}

// NewKeyText returns the base64 text of a new random secret, one line.
func NewKeyText() (string, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b) + "\n", nil
}

// Seal returns plaintext sealed under k and bound to ad.
func (k *Key) Seal(plaintext, ad []byte) []byte {
	out := make([]byte, 1, Overhead+len(plaintext))
	out[0] = version1
	return k.aead.Seal(out, nil, plaintext, ad)
}

// Open returns the plaintext of a value that Seal returned for the same key
// and ad, or ErrOpen.
func (k *Key) Open(sealed, ad []byte) ([]byte, error) {
	if !IsSealed(sealed) {
		return nil, ErrOpen
	}
	p, err := k.aead.Open(nil, nil, sealed[1:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return p, nil
}

// IsSealed reports whether b has the shape of a sealed value: a known
// version byte and room for the nonce and the tag. A clear provider key
// (printable text) never has it.
func IsSealed(b []byte) bool {
	return len(b) >= Overhead && b[0] == version1
}

// String hides the key, so that printing one by mistake reveals nothing.
func (k *Key) String() string { return "seal.Key(…)" }

// GoString is String, for %#v.
func (k *Key) GoString() string { return k.String() }
