package keys_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/keys"
)

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func TestNew_Shape(t *testing.T) {
	t.Parallel()
	for i := 0; i < 10000; i++ {
		k := keys.New()
		if len(k) != 51 || keys.Len != 51 {
			t.Fatalf("New() = %q: length %d, want 51 (Len = %d)", k, len(k), keys.Len)
		}
		if !strings.HasPrefix(k, "sk-cfw") {
			t.Fatalf("New() = %q, want prefix sk-cfw", k)
		}
		for j := 6; j < len(k); j++ {
			if !isAlnum(k[j]) {
				t.Fatalf("New() = %q: byte %d is %q, want [A-Za-z0-9]", k, j, k[j])
			}
		}
		if !keys.Valid(k) {
			t.Fatalf("Valid(New()) = false for %q", k)
		}
	}
}

func TestNew_Unique(t *testing.T) {
	t.Parallel()
	const n = 100000
	seen := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		k := keys.New()
		if seen[k] {
			t.Fatalf("New() returned %q twice in %d draws", k, i+1)
		}
		seen[k] = true
	}
}

// TestNew_Distribution checks that every letter of the alphabet is about
// equally likely. With 100k letters over 62 symbols the expectation is
// ~1613 per symbol, standard deviation ~40: a ±25% band (~±400) is ten
// standard deviations wide, so a correct New never fails it, while a
// modulo bias (c%62 over all 256 bytes makes the first 8 letters 5/4 as
// likely) or a missing symbol does.
func TestNew_Distribution(t *testing.T) {
	t.Parallel()
	counts := map[byte]int{}
	total := 0
	for total < 100000 {
		k := keys.New()
		for i := len(keys.Prefix); i < len(k); i++ {
			counts[k[i]]++
			total++
		}
	}
	want := float64(total) / float64(len(alphabet))
	for i := 0; i < len(alphabet); i++ {
		c := alphabet[i]
		if got := float64(counts[c]); got < 0.75*want || got > 1.25*want {
			t.Errorf("letter %q drawn %d times in %d, want %.0f ±25%%", c, counts[c], total, want)
		}
	}
	if len(counts) != len(alphabet) {
		t.Errorf("New() drew %d distinct letters, want %d", len(counts), len(alphabet))
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	good := "sk-cfw" + strings.Repeat("aZ9", 15)
	tests := []struct {
		name string
		key  string
		want bool
	}{
		{"good", good, true},
		{"all digits", "sk-cfw" + strings.Repeat("0", 45), true},
		{"empty", "", false},
		{"prefix only", "sk-cfw", false},
		{"one short", good[:len(good)-1], false},
		{"one long", good + "a", false},
		{"wrong prefix", "sk-cfx" + good[6:], false},
		{"upper-case prefix", "SK-CFW" + good[6:], false},
		{"openai shape", "sk-proj" + good[7:], false},
		{"dash in body", good[:20] + "-" + good[21:], false},
		{"underscore in body", good[:20] + "_" + good[21:], false},
		{"space in body", good[:20] + " " + good[21:], false},
		{"NUL in body", good[:20] + "\x00" + good[21:], false},
		{"NUL at end", good[:len(good)-1] + "\x00", false},
		{"newline at end", good[:len(good)-1] + "\n", false},
		{"high byte", good[:20] + "\xff" + good[21:], false},
		{"unicode same byte length", good[:20] + "é" + good[22:], false},
		{"Bearer prefix", "Bearer " + good[:len(good)-7], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := keys.Valid(tc.key); got != tc.want {
				t.Errorf("Valid(%q) = %v, want %v", tc.key, got, tc.want)
			}
		})
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	// SHA-256("abc"), FIPS 180-2 test vector.
	if got, want := keys.Hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("Hash(%q) = %s, want %s", "abc", got, want)
	}
	a, b := keys.New(), keys.New()
	if h1, h2 := keys.Hash(a), keys.Hash(strings.Clone(a)); h1 != h2 {
		t.Errorf("Hash is not deterministic: %s then %s", h1, h2)
	}
	if keys.Hash(a) == keys.Hash(b) {
		t.Errorf("Hash(%q) == Hash(%q)", a, b)
	}
	if h := keys.Hash(a); strings.Contains(h, a[6:]) || len(h) != 64 {
		t.Errorf("Hash(%q) = %q: want 64 hex characters that do not contain the key", a, h)
	}
}

func TestHint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		key  string
		want string
	}{
		{"user key", "sk-cfwABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs", "sk-cfw…pqrs"},
		{"provider key", "sk-proj-0123456789abcdef", "sk-pro…cdef"},
		{"13 characters", "abcdefghijklm", "abcdef…jklm"},
		{"12 characters", "abcdefghijkl", "…kl"},
		{"5 characters", "abcde", "…de"},
		{"4 characters", "abcd", "…"},
		{"empty", "", "…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := keys.Hint(tc.key); got != tc.want {
				t.Errorf("Hint(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

// TestHint_NeverRevealsMuch checks, for every length, that a hint shows at
// most 10 characters of the key and never the whole of a short one.
func TestHint_NeverRevealsMuch(t *testing.T) {
	t.Parallel()
	for n := 0; n <= 200; n++ {
		k := strings.Repeat("x", n)
		h := strings.Replace(keys.Hint(k), "…", "", 1)
		if len(h) > 10 {
			t.Errorf("Hint of a %d-character key reveals %d characters, want at most 10", n, len(h))
		}
		if n > 0 && len(h) >= n {
			t.Errorf("Hint of a %d-character key reveals %d characters: all of it", n, len(h))
		}
	}
	for i := 0; i < 1000; i++ {
		k := keys.New()
		h := keys.Hint(k)
		if !strings.HasPrefix(h, "sk-cfw…") || len(strings.Replace(h, "…", "", 1)) != 10 {
			t.Fatalf("Hint(%q) = %q, want sk-cfw…XXXX", k, h)
		}
	}
}

func TestEqual(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		{"same", "sk-cfwabc", "sk-cfwabc", true},
		{"both empty", "", "", true},
		{"differ at end", "sk-cfwabc", "sk-cfwabd", false},
		{"prefix of other", "sk-cfwab", "sk-cfwabc", false},
		{"empty and not", "", "x", false},
		{"case differs", "sk-cfwABC", "sk-cfwabc", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := keys.Equal(tc.a, tc.b); got != tc.want {
				t.Errorf("Equal(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

func TestSecret_NeverPrintsKey(t *testing.T) {
	t.Parallel()
	k := keys.New()
	s := keys.Secret(k)
	body := k[len(keys.Prefix) : len(k)-4] // the part a hint never shows
	hint := keys.Hint(k)

	formats := []string{"%v", "%s", "%q", "%+v", "%#v", "%x", "%X", "%d", "%10s", "%-60v"}
	for _, f := range formats {
		got := fmt.Sprintf(f, s)
		if strings.Contains(got, body) || strings.Contains(got, fmt.Sprintf("%x", body)) ||
			strings.Contains(got, fmt.Sprintf("%X", body)) {
			t.Errorf("Sprintf(%q, Secret) = %q: reveals the key", f, got)
		}
	}
	if got := s.String(); got != hint {
		t.Errorf("Secret.String() = %q, want %q", got, hint)
	}
	// Inside a struct, through fmt and through Sprint of a slice.
	wrapped := fmt.Sprintf("%v %+v %v", struct{ Key keys.Secret }{s}, &struct{ Key keys.Secret }{s}, []keys.Secret{s})
	if strings.Contains(wrapped, body) {
		t.Errorf("Sprintf of a struct holding a Secret = %q: reveals the key", wrapped)
	}
}

func TestSecret_Slog(t *testing.T) {
	t.Parallel()
	k := keys.New()
	body := k[len(keys.Prefix) : len(k)-4]
	hint := keys.Hint(k)
	handlers := []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	}
	for _, h := range handlers {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(h.new(&buf))
			log.Info("provider key added", "key", keys.Secret(k))
			log.With("key", keys.Secret(k)).Info("with")
			log.Info("group", slog.Group("g", "key", keys.Secret(k)))
			log.Info("any", slog.Any("key", keys.Secret(k)))
			out := buf.String()
			if strings.Contains(out, body) {
				t.Errorf("log output reveals the key:\n%s", out)
			}
			if n := strings.Count(out, hint); n != 4 {
				t.Errorf("log output has the hint %q %d times, want 4:\n%s", hint, n, out)
			}
		})
	}
}

func TestSecret_LogValue(t *testing.T) {
	t.Parallel()
	k := keys.New()
	got := keys.Secret(k).LogValue()
	want := slog.StringValue(keys.Hint(k))
	if diff := cmp.Diff(want.String(), got.String()); diff != "" || got.Kind() != slog.KindString {
		t.Errorf("Secret.LogValue() mismatch (-want +got):\n%s", diff)
	}
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		keys.New()
	}
}

func BenchmarkHash(b *testing.B) {
	k := keys.New()
	for b.Loop() {
		keys.Hash(k)
	}
}
