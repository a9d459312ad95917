package cmd

import (
	"bytes"
	"testing"

	"github.com/charmbracelet/lipgloss"
)

func TestBar(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v, top int64
		width  int
		want   string
	}{
		{0, 100, 10, ""},
		{100, 100, 10, "██████████"},
		{50, 100, 10, "█████"},
		{1, 1000, 10, "▏"},      // tiny but not zero: still shows
		{55, 100, 10, "█████▌"}, // 5.5 cells
		{200, 100, 4, "████"},   // never wider than width
		{5, 0, 10, ""},
		{-3, 10, 10, ""},
	}
	for _, tc := range tests {
		if got := bar(tc.v, tc.top, tc.width); got != tc.want {
			t.Errorf("bar(%d, %d, %d) = %q, want %q", tc.v, tc.top, tc.width, got, tc.want)
		}
	}
}

// TestListing_controlBytes checks that a value recorded from a request,
// such as a model name, cannot put escape sequences or line breaks into a
// listing.
func TestListing_controlBytes(t *testing.T) {
	t.Parallel()
	l := listing{Header: []string{"MODEL", "N"}, Rows: [][]cell{{{Text: "gpt\x1b[2J\x1b]0;pwned\x07-4o\n\tx\u009b"}, {Text: "1"}}}}
	var plain, table bytes.Buffer
	if err := l.writePlain(&plain); err != nil {
		t.Fatal(err)
	}
	if err := l.writeTable(&table, lipgloss.NewRenderer(&table)); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string][]byte{"plain": plain.Bytes(), "table": table.Bytes()} {
		if bytes.ContainsAny(out, "\x1b\x07\t\u009b") {
			t.Errorf("%s listing contains control characters: %q", name, out)
		}
	}
	if want := "MODEL                     N\ngpt?[2J?]0;pwned?-4o??x?  1\n"; plain.String() != want {
		t.Errorf("plain listing = %q, want %q", plain.String(), want)
	}
}
