package cmd

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

type statsOptions struct {
	User, Since, By string
	JSON            bool
}

func newStatsCmd(app *appContext) *cobra.Command {
	var opts statsOptions
	c := &cobra.Command{
		Use:   "stats",
		Short: "Show usage totals: requests, errors, prompt/completion/total tokens, cost",
		Long: "Show usage totals of the proxied requests, for everyone or one --user, since a time,\n" +
			"as one totals row or grouped --by user, model, provider or day (UTC).",
		Example: "  aiproxy stats --since 7d --by day\n" +
			"  aiproxy stats --user alice --by model --json",
		Args: argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			return runStats(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	c.Flags().StringVar(&opts.User, "user", "", "only this user's requests")
	c.Flags().StringVar(&opts.Since, "since", "", "only requests since D: a duration back from now (24h, 7d), a date (2027-01-31, UTC) or an RFC 3339 time")
	c.Flags().StringVar(&opts.By, "by", "", "group by user, model, provider or day")
	addJSONFlag(c, &opts.JSON)
	return c
}

func runStats(ctx context.Context, app *appContext, out io.Writer, opts statsOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	rows, err := svc.Stats(ctx, admin.StatsQuery{User: opts.User, Since: opts.Since, By: opts.By})
	if aiproxy.ErrorCode(err) == aiproxy.ENOTFOUND && opts.User != "" {
		// The service does not echo the name (see Service.Stats); the
		// admin who typed it gets it back.
		return aiproxy.Errorf(aiproxy.ENOTFOUND, "user %q not found", opts.User)
	}
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(out, admin.StatsJSON(opts.By, rows))
	}
	l := statsListing(rows, opts.By)
	if opts.By == aiproxy.ByDay && isTerminal(out) {
		l = withBars(l, rows, 24)
	}
	return l.write(out)
}

func statsListing(rows []aiproxy.StatsRow, by string) listing {
	l := listing{Header: []string{"REQUESTS", "ERRORS", "PARTIAL", "PROMPT TOKENS", "COMPLETION TOKENS", "TOTAL TOKENS", "COST USD", "UNMETERED"}}
	if by != "" {
		l.Header = append([]string{strings.ToUpper(by)}, l.Header...)
	}
	n := func(v int64) cell { return cell{Text: strconv.FormatInt(v, 10)} }
	for _, r := range rows {
		var row []cell
		if by != "" {
			key := cell{Text: r.Key}
			if r.Key == "" {
				key = cell{Text: "-", Tone: toneMuted} // e.g. a request without a model
			}
			row = append(row, key)
		}
		cost := cell{Text: "-", Tone: toneMuted} // nothing in the group was priced
		if r.CostUSD != nil {
			cost = cell{Text: strconv.FormatFloat(*r.CostUSD, 'f', 6, 64)}
		}
		row = append(row, n(r.Requests), n(r.Errors), n(r.Partial), n(r.PromptTokens), n(r.CompletionTokens), n(r.TotalTokens),
			cost, n(r.Unmetered))
		l.Rows = append(l.Rows, row)
	}
	return l
}

// withBars adds a bar chart column to a stats listing: total tokens per row,
// or requests when no row has any tokens.
func withBars(l listing, rows []aiproxy.StatsRow, width int) listing {
	value := func(r aiproxy.StatsRow) int64 { return r.TotalTokens }
	label := "TOKENS"
	var top int64
	for _, r := range rows {
		top = max(top, r.TotalTokens)
	}
	if top == 0 {
		value = func(r aiproxy.StatsRow) int64 { return r.Requests }
		label = "REQUESTS"
		for _, r := range rows {
			top = max(top, r.Requests)
		}
	}
	l.Header = append(l.Header, label)
	for i, r := range rows {
		l.Rows[i] = append(l.Rows[i], cell{Text: bar(value(r), top, width), Tone: toneAccent})
	}
	return l
}
