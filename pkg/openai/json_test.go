package openai

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestSpecial checks the word tricks of str against a byte-by-byte test, on
// every byte value at every position and on random words made of the bytes
// that matter and their neighbours.
func TestSpecial(t *testing.T) {
	naive := func(b []byte) bool {
		for _, c := range b {
			if c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
				return true
			}
		}
		return false
	}
	check := func(b []byte) {
		w := binary.LittleEndian.Uint64(b)
		if got, want := special(w) != 0, naive(b); got != want {
			t.Fatalf("special(%q) = %v, want %v", b, got, want)
		}
	}
	b := make([]byte, 8)
	for pos := range 8 {
		for v := range 256 {
			for i := range b {
				b[i] = 'a'
			}
			b[pos] = byte(v)
			check(b)
		}
	}
	interesting := []byte{0, 1, 0x1f, 0x20, 0x21, '"', 0x23, '\\', 0x5b, 0x5d, 0x7f, 0x80, 0xff, 'a', 'Z'}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		for i := range b {
			b[i] = interesting[rng.IntN(len(interesting))]
		}
		check(b)
	}
}

func TestLooseStr(t *testing.T) {
	tests := []struct {
		in      string
		end     int
		escaped bool
	}{
		{`abc"`, 4, false},
		{`"`, 1, false},
		{`abcdefghijklmnop"x`, 17, false},
		{`a\"b"`, 5, true},
		{`a\\"b"`, 4, true},
		{`abcdefgh\\\\\\\"ijklmnop"`, 25, true},
		{`abcdefgh\`, -1, true},
		{`abcdefghijk`, -1, false},
		{``, -1, false},
	}
	for _, tc := range tests {
		end, esc := looseStr([]byte(tc.in), 0)
		if end != tc.end || (end >= 0 && esc != tc.escaped) {
			t.Errorf("looseStr(%q) = %d, %v; want %d, %v", tc.in, end, esc, tc.end, tc.escaped)
		}
	}
}
