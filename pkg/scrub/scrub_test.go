package scrub

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

const (
	key  = "gsk_5fQmZr8wX2yBv7NpLk3Tj9HcD4sEaU6o"
	key2 = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"
	key3 = "Tj9HcD4sEaU6o-overlaps-the-end-of-key"
)

func mask(k string) string { return k[:3] + strings.Repeat("*", len(k)-7) + k[len(k)-4:] }

// chunks returns a reader that returns the pieces one per Read.
func chunks(pieces ...string) io.Reader {
	return &pieceReader{pieces: pieces}
}

type pieceReader struct{ pieces []string }

func (r *pieceReader) Read(p []byte) (int, error) {
	for len(r.pieces) > 0 && r.pieces[0] == "" {
		r.pieces = r.pieces[1:]
	}
	if len(r.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.pieces[0])
	r.pieces[0] = r.pieces[0][n:]
	return n, nil
}

func TestString(t *testing.T) {
	tests := []struct {
		name, in, want string
		secrets        []string
	}{
		{"none", "hello", "hello", []string{key}},
		{"one", "Bearer " + key, "Bearer " + mask(key), []string{key}},
		{"twice adjacent", key + key, mask(key) + mask(key), []string{key}},
		{"two secrets", key2 + " and " + key, mask(key2) + " and " + mask(key), []string{key, key2}},
		{"inside a word", "x" + key + "y", "x" + mask(key) + "y", []string{key}},
		{"overlapping secrets", "12345678345678", "123*5**8345678", []string{"12345678", "34567834", "45678345"}},
		{"overlapping occurrences", "ababababab", "aba*a*abab", []string{"abababab"}},
		{"short secret ignored", "abc1234 abc1234", "abc1234 abc1234", []string{"abc1234"}},
		{"eight bytes", "x12345678x", "x123*5678x", []string{"12345678"}},
		{"empty secret ignored", "abc", "abc", []string{""}},
		{"no secrets", key, key, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in, tc.secrets...); got != tc.want {
				t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestHeader(t *testing.T) {
	h := http.Header{
		"X-Echo":       {"key=" + key, "fine"},
		"Set-Cookie":   {"a=" + key2 + "; Path=/"},
		"Content-Type": {"application/json"},
	}
	Header(h, key, key2)
	want := http.Header{
		"X-Echo":       {"key=" + mask(key), "fine"},
		"Set-Cookie":   {"a=" + mask(key2) + "; Path=/"},
		"Content-Type": {"application/json"},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("Header() differs (-want +got):\n%s", diff)
	}
}

// TestReaderEverySplit cuts a body holding keys at every byte, in two reads
// and in reads of every size, and one byte at a time.
func TestReaderEverySplit(t *testing.T) {
	in := `data: {"error":"invalid key ` + key + `"}` + "\n\n" + key2 + key + "sk-pro" + key + key3[13:] + "gsk_5fQ"
	secrets := []string{key, key2, key3}
	want := String(in, secrets...)
	if want == in || strings.Contains(want, key) || strings.Contains(want, key2) || strings.Contains(want, key3) {
		t.Fatalf("String(%q) = %q: keys not masked", in, want)
	}
	check := func(how string, r io.Reader) {
		t.Helper()
		got, err := io.ReadAll(NewReader(r, secrets...))
		if err != nil || string(got) != want {
			t.Fatalf("%s: got %q, %v; want %q", how, got, err, want)
		}
	}
	for k := 0; k <= len(in); k++ {
		check("split at "+strconv.Itoa(k), chunks(in[:k], in[k:]))
	}
	for size := 1; size <= len(in); size++ {
		var pieces []string
		for s := in; len(s) > 0; s = s[min(size, len(s)):] {
			pieces = append(pieces, s[:min(size, len(s))])
		}
		check("reads of "+strconv.Itoa(size), chunks(pieces...))
	}
	check("OneByteReader", iotest.OneByteReader(strings.NewReader(in)))
	check("HalfReader", iotest.HalfReader(strings.NewReader(in)))
	check("DataErrReader", iotest.DataErrReader(strings.NewReader(in)))
	if err := iotest.TestReader(NewReader(strings.NewReader(in), secrets...), []byte(want)); err != nil {
		t.Error(err)
	}
}

func TestReaderAfterOneMiB(t *testing.T) {
	pad := bytes.Repeat([]byte("data: {\"x\":\"0123456789abcdef\"}\n\n"), (1<<20)/32)
	in := append(append(bytes.Clone(pad), key...), '\n')
	want := append(append(bytes.Clone(pad), mask(key)...), '\n')
	for _, r := range []io.Reader{bytes.NewReader(in), iotest.HalfReader(bytes.NewReader(in)), &pieceReader{pieces: []string{string(in[:len(pad)+5]), string(in[len(pad)+5:])}}} {
		got, err := io.ReadAll(NewReader(r, key))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes, %v; want %d bytes with the key masked", len(got), err, len(want))
		}
	}
}

// scripted returns its pieces one per Read; a Read past them fails the test:
// it would mean the reader waited for data it did not need.
type scripted struct {
	t      *testing.T
	pieces []string
}

func (s *scripted) Read(p []byte) (int, error) {
	if len(s.pieces) == 0 {
		s.t.Errorf("read again before returning what it had")
		return 0, errors.New("script over")
	}
	n := copy(p, s.pieces[0])
	if n < len(s.pieces[0]) {
		s.pieces[0] = s.pieces[0][n:]
	} else {
		s.pieces = s.pieces[1:]
	}
	return n, nil
}

// TestReaderNeverWaits checks that a Read returns everything read, except a
// trailing start of a secret, and that the rest comes with the next piece.
func TestReaderNeverWaits(t *testing.T) {
	up := &scripted{t: t, pieces: []string{"data: 1\n\n"}}
	r := NewReader(up, key)
	buf := make([]byte, 4096)
	read := func(want string) {
		t.Helper()
		n, err := r.Read(buf)
		if string(buf[:n]) != want || err != nil {
			t.Fatalf("Read = %q, %v; want %q, nil", buf[:n], err, want)
		}
	}
	read("data: 1\n\n")
	up.pieces = []string{"data: gs"} // "gs" may start the key
	read("data: ")
	up.pieces = []string{"x\n\n"} // it did not
	read("gsx\n\n")
	up.pieces = []string{"data: " + key[:20]}
	read("data: ")
	up.pieces = []string{key[20:] + "\n\n"}
	read(mask(key) + "\n\n")
	// A Read with only the start of a key reads on.
	up.pieces = []string{"g", "g"} // "gg": the second may start the key
	read("g")
	up.pieces = []string{"x"}
	read("gx")
}

func TestReaderErrors(t *testing.T) {
	cut := errors.New("connection reset")
	up := io.MultiReader(strings.NewReader("abc "+key[:10]), iotest.ErrReader(cut))
	got, err := io.ReadAll(NewReader(up, key))
	if !errors.Is(err, cut) || string(got) != "abc "+key[:10] {
		t.Errorf("got %q, %v; want the held start released, then %v", got, err, cut)
	}
	r := NewReader(strings.NewReader("x"), key)
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
}

func BenchmarkReader(b *testing.B) {
	in := bytes.Repeat([]byte(`data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"The quick brown fox, sk-pro jumps"}}]}`+"\n\n"), 10000)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(in), key, key2)
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	}
}

// TestReaderRandomReads masks random text full of secrets and their
// beginnings, read in random pieces into buffers of random sizes (some
// shorter than a secret), as String masks it whole.
func TestReaderRandomReads(t *testing.T) {
	secrets := []string{"sk-abcdefghijkl", "sk-abcd1234", "xxxxxxxxyy"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "sk-", "sk-abcd", "x", "xxxx", "y", "\n", "sk-abcdefghijkl", "sk-abcd1234", "xxxxxxxxyy"}
	for i := range 2000 {
		var in strings.Builder
		for range rng.IntN(40) {
			in.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		var pieces []string
		for rest := in.String(); rest != ""; {
			n := min(1+rng.IntN(20), len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		r := NewReader(chunks(pieces...), secrets...)
		var out []byte
		for {
			p := make([]byte, 1+rng.IntN(24))
			n, err := r.Read(p)
			out = append(out, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if want := String(in.String(), secrets...); string(out) != want {
			t.Fatalf("case %d: %q read as %q, want %q", i, in.String(), out, want)
		}
	}
}
