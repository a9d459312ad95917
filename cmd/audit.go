package cmd

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/audit"
)

type auditOptions struct {
	Since string
	JSON  bool
}

func newAuditCmd(app *appContext) *cobra.Command {
	var opts auditOptions
	c := &cobra.Command{
		Use:   "audit",
		Short: "List the admin changes: who changed what, when, and whether it was refused",
		Long: "List the audit log, oldest first: every change made with the CLI or the HTTP admin\n" +
			"(users, keys, expiries, limits, providers, prices) and every key a user reset\n" +
			"themselves, with its time, source (cli and the OS user, or http and the client\n" +
			"address), action, target and result (ok, refused: CODE, or error). It never\n" +
			"holds a key or a token.",
		Example: "  aiproxy audit --since 7d\n" +
			"  aiproxy audit --since 2027-01-31 --json",
		Args: argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			return runAudit(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	c.Flags().StringVar(&opts.Since, "since", "", "only changes since D: a duration back from now (24h, 7d), a date (2027-01-31, UTC) or an RFC 3339 time")
	addJSONFlag(c, &opts.JSON)
	return c
}

func runAudit(ctx context.Context, app *appContext, out io.Writer, opts auditOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	recs, err := svc.AuditLog(ctx, opts.Since)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(out, recs)
	}
	return auditListing(recs).write(out)
}

func auditListing(recs []audit.Record) listing {
	l := listing{Header: []string{"TIME", "SOURCE", "ACTOR", "ACTION", "TARGET", "RESULT"}}
	for _, r := range recs {
		result := cell{Text: r.Result}
		if r.Result != audit.OK {
			result.Tone = toneWarn
		}
		target := cell{Text: r.Target}
		if r.Target == "" {
			target = cell{Text: "-", Tone: toneMuted}
		}
		l.Rows = append(l.Rows, []cell{timeCell(r.Time), {Text: r.Source}, {Text: r.Actor}, {Text: r.Action}, target, result})
	}
	return l
}

// auditCLI names the source of every change the command makes, for the
// audit log: the CLI and the OS user who ran it. The command's path and
// first argument ("user.limit", "alice") name the change until the service
// names it, so that a command whose service method does not yet is still
// recorded when it writes. serve is left out: its own writes are usage
// records, and the changes made through it come over HTTP.
func auditCLI(c *cobra.Command, args []string) {
	if c.Name() == "serve" || c.Context() == nil {
		return
	}
	target := ""
	if len(args) > 0 {
		target = args[0]
	}
	action := strings.ReplaceAll(subPath(c), " ", ".")
	c.SetContext(audit.NewContext(c.Context(), audit.CLI(), action, target))
}

// readOnly are the commands (by name) whose failures are not refused
// changes: listings and checks.
var readOnly = map[string]bool{
	"list": true, "stats": true, "audit": true, "version": true, "health": true,
	"test": true, "backup": true, "help": true, "completion": true, "bash": true,
	"zsh": true, "fish": true, "powershell": true, "serve": true,
}

// auditFailed records the change that command c was making as refused by
// err, in a transaction of its own, when the service did not record it
// already: a change refused by the command itself (a malformed --expires)
// before it reached the service. Listings and checks are not changes.
func (a *appContext) auditFailed(c *cobra.Command, err error) {
	if c == nil || readOnly[c.Name()] || c.Context() == nil {
		return
	}
	e := audit.FromContext(c.Context())
	if e == nil || e.Recorded() {
		return
	}
	if a.svc == nil && a.err != nil {
		return // the database did not open: nowhere to record
	}
	svc, serr := a.service(c.Context())
	if serr != nil {
		return
	}
	svc.EndChange(c.Context(), err)
}
