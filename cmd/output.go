package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// tone is how a table cell is emphasised on a terminal. Plain text and JSON
// ignore it.
type tone int

const (
	toneNone   tone = iota
	toneWarn        // e.g. an expired user
	toneMuted       // absent values
	toneAccent      // bar charts
)

// cell is one table cell.
type cell struct {
	Text  string // as printed in plain text, and on a terminal unless Short is set
	Short string // a more compact form for the terminal table
	Tone  tone
}

// listing is what every list command prints: a header and rows. It is drawn
// as a lipgloss table on a terminal and as tab-aligned plain text otherwise.
type listing struct {
	Header []string
	Rows   [][]cell
}

// isTerminal reports whether w is a terminal. Only an *os.File can be one:
// a bytes.Buffer in a test or a pipe in a script never is.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// write prints l to w: a table on a terminal, plain aligned text otherwise.
func (l listing) write(w io.Writer) error {
	if isTerminal(w) {
		return l.writeTable(w, lipgloss.NewRenderer(w))
	}
	return l.writePlain(w)
}

// writePlain prints a header line and one line per row, columns aligned
// with spaces. The format is stable: scripts may rely on it.
func (l listing) writePlain(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	line := func(cells []string) {
		for i, c := range cells {
			if i > 0 {
				io.WriteString(tw, "\t")
			}
			io.WriteString(tw, printable(c))
		}
		io.WriteString(tw, "\n")
	}
	line(l.Header)
	for _, r := range l.Rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = c.Text
		}
		line(cells)
	}
	return tw.Flush()
}

// writeTable draws l as a rounded lipgloss table. Styles come from r, which
// is bound to the writer, so colours follow what that writer supports.
func (l listing) writeTable(w io.Writer, r *lipgloss.Renderer) error {
	header := r.NewStyle().Bold(true).Padding(0, 1)
	base := r.NewStyle().Padding(0, 1)
	styles := map[tone]lipgloss.Style{
		toneNone:   base,
		toneWarn:   base.Foreground(lipgloss.Color("1")),
		toneMuted:  base.Foreground(lipgloss.Color("8")),
		toneAccent: base.Foreground(lipgloss.Color("6")),
	}
	t := table.New().
		Border(lipgloss.RoundedBorder()).
		BorderStyle(r.NewStyle().Foreground(lipgloss.Color("8"))).
		Headers(l.Header...).
		StyleFunc(func(row, col int) lipgloss.Style {
			if row == table.HeaderRow {
				return header
			}
			if row < len(l.Rows) && col < len(l.Rows[row]) {
				return styles[l.Rows[row][col].Tone]
			}
			return base
		})
	for _, row := range l.Rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = c.Text
			if c.Short != "" {
				cells[i] = c.Short
			}
			cells[i] = printable(cells[i])
		}
		t.Row(cells...)
	}
	_, err := fmt.Fprintln(w, t.Render())
	return err
}

// printable replaces control characters, so that a value recorded from a
// request (a model name, say) cannot move the cursor or inject escape
// sequences into the admin's terminal, nor break the plain columns.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// formatTime is how plain listings show a time: RFC 3339 in UTC, to the
// second.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// shortTime is how terminal tables show a time: to the minute, in UTC.
func shortTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04")
}

// timeCell shows t in both forms.
func timeCell(t time.Time) cell {
	return cell{Text: formatTime(t), Short: shortTime(t)}
}

// addJSONFlag adds the --json flag every listing accepts.
func addJSONFlag(c *cobra.Command, p *bool) {
	c.Flags().BoolVar(p, "json", false, "print a JSON array instead of a table")
}

// bar returns a bar of up to width cells for v out of top, drawn with
// eighth blocks so that small differences still show.
func bar(v, top int64, width int) string {
	if v <= 0 || top <= 0 || width <= 0 {
		return ""
	}
	if v > top {
		v = top
	}
	// Round up, so that any v > 0 shows.
	eighths := int(math.Ceil(float64(v) / float64(top) * float64(width*8)))
	if eighths > width*8 {
		eighths = width * 8
	}
	partial := []string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}
	return strings.Repeat("█", eighths/8) + partial[eighths%8]
}

// Argument validators whose errors are one line and name what is missing.

// argsExact accepts exactly the named arguments.
func argsExact(names ...string) cobra.PositionalArgs {
	return argsRange(len(names), names...)
}

// argsRange accepts at least least arguments and at most len(names).
func argsRange(least int, names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		switch {
		case len(args) < least:
			return fmt.Errorf("%s: missing %s (see '%s --help')",
				subPath(c), strings.Join(names[len(args):least], " "), c.CommandPath())
		case len(args) > len(names):
			return fmt.Errorf("%s: unexpected argument %q (see '%s --help')",
				subPath(c), args[len(names)], c.CommandPath())
		}
		return nil
	}
}

// subPath is the command path without the binary's name ("user create"),
// since Execute already starts the error line with "aiproxy:".
func subPath(c *cobra.Command) string {
	p := c.CommandPath()
	if i := strings.IndexByte(p, ' '); i >= 0 {
		return p[i+1:]
	}
	return p
}

// groupRunE runs a command that only holds subcommands: alone it prints its
// help; with an argument, that argument is an unknown subcommand.
func groupRunE(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return fmt.Errorf("%s (see '%s --help')", msg, c.CommandPath())
}
