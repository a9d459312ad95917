package cmd

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// limitFlags are the limit flags of `user limit` and `user create`, one
// string per aiproxy.LimitFields entry, so that "none" passes through.
type limitFlags struct {
	values map[string]*string
	clear  bool
}

var limitFlagHelp = map[string]string{
	"rpm":        "requests per minute (sliding 60 s window)",
	"tpm":        "total tokens per minute (sliding 60 s window)",
	"concurrent": "requests in flight at once",
	"tokens":     "total tokens per period: N/PERIOD, PERIOD day, week, month (calendar, UTC, weeks from Monday) or total",
	"spend":      "US dollars per period: USD/PERIOD (5/month, 0.50/day); only priced models may be used",
	"models":     "allowed models: a comma-separated list with * wildcards, case-sensitive (gpt-4o*,claude-*)",
}

// addLimitFlags adds --rpm … --models to c; each takes none to remove
// that limit.
func addLimitFlags(c *cobra.Command, f *limitFlags) {
	f.values = map[string]*string{}
	for _, name := range aiproxy.LimitFields {
		f.values[name] = c.Flags().String(name, "", limitFlagHelp[name]+"; none removes it")
	}
}

// update is the change the flags given on c's command line ask for, in
// the order of aiproxy.LimitFields.
func (f *limitFlags) update(c *cobra.Command) admin.LimitsUpdate {
	up := admin.LimitsUpdate{Clear: f.clear}
	for _, name := range aiproxy.LimitFields {
		if c.Flags().Changed(name) {
			up.Changes = append(up.Changes, admin.LimitChange{Field: name, Value: *f.values[name]})
		}
	}
	return up
}

type userLimitOptions struct {
	Name string
	JSON bool
}

func newUserLimitCmd(app *appContext) *cobra.Command {
	var opts userLimitOptions
	var flags limitFlags
	c := &cobra.Command{
		Use:   "limit NAME [--rpm N] [--tpm N] [--concurrent N] [--tokens N/PERIOD] [--spend USD/PERIOD] [--models LIST] [--clear]",
		Short: "Set a user's rate limits, budgets and allowed models",
		Long: "Set user NAME's limits; NAME '*' sets the defaults, which apply to every user without limits of their own.\n" +
			"A user's own limits replace the defaults as a whole; a limit given as none is removed, and --clear removes\n" +
			"NAME's own limits so that the defaults apply again. Limits not named keep their value.\n" +
			"Over --rpm, --tpm or --concurrent a request gets 429 rate_limit_exceeded with Retry-After; over --tokens or\n" +
			"--spend, 429 insufficient_quota until the period resets. A running serve applies a change at its next request.",
		Example: "  aiproxy user limit alice --rpm 60 --spend 5/month\n" +
			"  aiproxy user limit '*' --tokens 1000000/day --models 'gpt-4o*,claude-*'\n" +
			"  aiproxy user limit alice --spend none\n" +
			"  aiproxy user limit alice --clear",
		Args: argsExact("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Name = args[0]
			up := flags.update(c)
			if up.Empty() {
				return fmt.Errorf("user limit: give at least one of --%s or --clear (see '%s --help')",
					strings.Join(aiproxy.LimitFields, ", --"), c.CommandPath())
			}
			return runUserLimit(c.Context(), app, c.OutOrStdout(), opts, up)
		},
	}
	addLimitFlags(c, &flags)
	c.Flags().BoolVar(&flags.clear, "clear", false, "remove NAME's own limits first (the defaults apply again)")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the user's row, limits included, as JSON")
	return c
}

func runUserLimit(ctx context.Context, app *appContext, out io.Writer, opts userLimitOptions, up admin.LimitsUpdate) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	row, err := svc.SetLimits(ctx, opts.Name, up)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(out, row)
	}
	return nil
}

// limitsCell sums up a user's limits for the user list table: "-" when
// none is set, "(default)" when they are the defaults.
func limitsCell(v aiproxy.LimitsView) cell {
	var parts []string
	if v.RPM != nil {
		parts = append(parts, strconv.FormatInt(*v.RPM, 10)+" rpm")
	}
	if v.TPM != nil {
		parts = append(parts, strconv.FormatInt(*v.TPM, 10)+" tpm")
	}
	if v.Concurrent != nil {
		parts = append(parts, strconv.FormatInt(*v.Concurrent, 10)+" at once")
	}
	if b := v.Tokens; b != nil {
		parts = append(parts, fmt.Sprintf("%d/%d tokens %s", b.Used, b.Limit, perPeriod(b.Period)))
	}
	if b := v.Spend; b != nil {
		parts = append(parts, fmt.Sprintf("$%s/$%s %s", usd(b.UsedUSD), usd(b.LimitUSD), perPeriod(b.Period)))
	}
	if v.Models != nil {
		parts = append(parts, "models "+strings.Join(v.Models, ","))
	}
	if len(parts) == 0 {
		return cell{Text: "-", Tone: toneMuted}
	}
	text := strings.Join(parts, ", ")
	if v.Default {
		text += " (default)"
	}
	return cell{Text: text}
}

func perPeriod(p aiproxy.Period) string {
	if p == aiproxy.PeriodTotal {
		return "in total"
	}
	return "a " + string(p)
}

func usd(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
