package seal_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/seal"
)

func newKey(t testing.TB) *seal.Key {
	t.Helper()
	text, err := seal.NewKeyText()
	if err != nil {
		t.Fatal(err)
	}
	k, err := seal.ParseKey([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSeal_RoundTrip: a sealed value opens with its key and associated
// data, carries the version byte, and never holds the plaintext.
func TestSeal_RoundTrip(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	plain := []byte("sk-upstream-0123456789abcdef")
	ad := []byte("api.example.com\x001")
	sealed := k.Seal(plain, ad)
	if len(sealed) != len(plain)+seal.Overhead {
		t.Errorf("len(Seal) = %d, want %d", len(sealed), len(plain)+seal.Overhead)
	}
	if sealed[0] != 1 || !seal.IsSealed(sealed) {
		t.Errorf("Seal() starts with %#x, IsSealed = %v; want version 1", sealed[0], seal.IsSealed(sealed))
	}
	if bytes.Contains(sealed, plain) {
		t.Error("Seal() output contains the plaintext")
	}
	got, err := k.Open(sealed, ad)
	if err != nil || !bytes.Equal(got, plain) {
		t.Errorf("Open(Seal(p)) = %q, %v; want %q", got, err, plain)
	}
}

// TestSeal_FreshNonces: sealing the same value twice gives two different
// outputs (a random nonce each time), both of which open.
func TestSeal_FreshNonces(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	seen := map[string]bool{}
	for range 100 {
		s := k.Seal([]byte("same"), nil)
		if seen[string(s)] {
			t.Fatal("two seals of one value are equal: nonce reused")
		}
		seen[string(s)] = true
		if _, err := k.Open(s, nil); err != nil {
			t.Fatalf("Open() error = %v", err)
		}
	}
}

// TestSeal_OpenRefuses: a value opens only with its key and its associated
// data, unchanged; every other case is ErrOpen.
func TestSeal_OpenRefuses(t *testing.T) {
	t.Parallel()
	k, other := newKey(t), newKey(t)
	ad := []byte("api.example.com\x001")
	sealed := k.Seal([]byte("sk-upstream"), ad)
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name   string
		key    *seal.Key
		sealed []byte
		ad     []byte
	}{
		{"wrong key", other, sealed, ad},
		{"another host", k, sealed, []byte("api.other.com\x001")},
		{"another row", k, sealed, []byte("api.example.com\x002")},
		{"no associated data", k, sealed, nil},
		{"unknown version", k, flip(0), ad},
		{"changed nonce", k, flip(1), ad},
		{"changed ciphertext", k, flip(seal.Overhead - 16), ad},
		{"changed tag", k, flip(len(sealed) - 1), ad},
		{"truncated", k, sealed[:seal.Overhead-1], ad},
		{"empty", k, nil, ad},
		{"clear text", k, []byte("sk-upstream-0123456789abcdef0123456789"), ad},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := tc.key.Open(tc.sealed, tc.ad); !errors.Is(err, seal.ErrOpen) {
				t.Errorf("Open() = %q, %v; want ErrOpen", p, err)
			}
		})
	}
}

// TestParseKey: the secret is base64 of 32 bytes, whitespace around it
// ignored; anything else is refused without quoting the text.
func TestParseKey(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{0xfb}, 32) // encodes with + and / (or - and _)
	std := base64.StdEncoding.EncodeToString(raw)
	tests := []struct {
		name, text string
		ok         bool
	}{
		{"standard", std, true},
		{"newline and spaces", "  " + std + "\n\n", true},
		{"crlf", std + "\r\n", true},
		{"unpadded", base64.RawStdEncoding.EncodeToString(raw), true},
		{"url alphabet", base64.URLEncoding.EncodeToString(raw), true},
		{"empty", "", false},
		{"whitespace only", " \n", false},
		{"16 bytes", base64.StdEncoding.EncodeToString(raw[:16]), false},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(raw, 1)), false},
		{"not base64", "this-is-not-base64-at-all!!", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := seal.ParseKey([]byte(tc.text))
			if tc.ok != (err == nil) {
				t.Fatalf("ParseKey(%q) error = %v, want ok %v", tc.text, err, tc.ok)
			}
			if err != nil {
				if s := strings.TrimSpace(tc.text); s != "" && strings.Contains(err.Error(), s) {
					t.Errorf("ParseKey error %q quotes the secret", err)
				}
				return
			}
			// Every accepted spelling is the same key.
			want, _ := seal.NewKey(raw)
			if _, err := want.Open(k.Seal([]byte("x"), nil), nil); err != nil {
				t.Errorf("ParseKey(%q) is not the key of its bytes", tc.text)
			}
		})
	}
}

// TestKey_StringHidesTheKey: printing a key prints nothing of it.
func TestKey_StringHidesTheKey(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{0x41}, 32)
	k, err := seal.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{k.String(), k.GoString()} {
		if strings.Contains(s, "AAAA") || strings.Contains(s, "QUFB") {
			t.Errorf("String() = %q reveals the key", s)
		}
	}
}

// BenchmarkOpen is the unsealing of one provider key, which the store
// does when it loads a provider into its cache (never per request).
func BenchmarkOpen(b *testing.B) {
	k := newKey(b)
	ad := []byte("api.example.com\x0042")
	sealed := k.Seal([]byte("sk-proj-"+strings.Repeat("x", 156)), ad)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(sealed, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeal is the sealing of one provider key, on every write.
func BenchmarkSeal(b *testing.B) {
	k := newKey(b)
	ad := []byte("api.example.com\x0042")
	plain := []byte("sk-proj-" + strings.Repeat("x", 156))
	b.ReportAllocs()
	for b.Loop() {
		k.Seal(plain, ad)
	}
}
