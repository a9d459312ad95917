package cmd

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns both ends of a new pseudo-terminal, or skips the test
// where there is none.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	fd := int(ptm.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pseudo-terminal number: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pseudo-terminal: %v", err)
	}
	return ptm, pts
}

// sgr matches the colour and style escapes that lipgloss adds when TERM
// allows them.
var sgr = regexp.MustCompile("\x1b\\[[0-9;]*m")

// runOnTerminal runs aiproxy with stdout on a pseudo-terminal and returns
// what the terminal received, without colours and with \n line endings.
func runOnTerminal(t *testing.T, args ...string) (out, errOut string) {
	t.Helper()
	ptm, pts := openPTY(t)
	read := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		io.Copy(&buf, ptm) // ends with EIO once pts is closed and drained
		read <- buf.Bytes()
	}()
	var stderr bytes.Buffer
	code := Execute(t.Context(), args, Streams{In: strings.NewReader(""), Out: pts, Err: &stderr})
	pts.Close()
	got := <-read
	if code != 0 {
		t.Fatalf("aiproxy %v on a terminal: exit %d, stderr %q", args, code, stderr.String())
	}
	return sgr.ReplaceAllString(strings.ReplaceAll(string(got), "\r\n", "\n"), ""), stderr.String()
}

func TestTerminal_tables(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	tests := []struct {
		name string
		args []string
		want []string // substrings of the table
		not  []string
	}{
		{"user list", []string{"user", "list"}, []string{"╭", "│ NAME", "alice", "2025-06-02 00:00 expired", "╰"}, []string{"(expired)"}},
		{"provider list", []string{"provider", "list"}, []string{"╭", "│ HOST", "sk-pro…1111, sk-pro…2222"}, []string{"sk-proj-aaaa"}},
		{"stats by day has a bar chart", []string{"stats", "--by", "day"}, []string{"╭", "│ DAY", "████████████████████████", "▊"}, nil},
		{"stats by user has no chart", []string{"stats", "--by", "user"}, []string{"╭", "│ USER"}, []string{"█"}},
		{"json stays JSON", []string{"user", "list", "--json"}, []string{"[\n  {\n    \"name\": \"alice\""}, []string{"╭"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut := runOnTerminal(t, append([]string{"--db", db}, tc.args...)...)
			if errOut != "" {
				t.Errorf("stderr = %q, want empty", errOut)
			}
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("terminal output lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(out, s) {
					t.Errorf("terminal output contains %q:\n%s", s, out)
				}
			}
		})
	}
}
