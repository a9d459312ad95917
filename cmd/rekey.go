package cmd

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

type rekeyOptions struct {
	NewSecretKeyFile string
	Forget           bool
}

// newRekeyCmd is `aiproxy rekey --new-secret-key-file FILE` (CONTRACT
// section 4). It has no HTTP twin: it needs the secret files on the
// database's host, and serve must be stopped while it runs.
func newRekeyCmd(app *appContext) *cobra.Command {
	var opts rekeyOptions
	c := &cobra.Command{
		Use:   "rekey --new-secret-key-file FILE",
		Short: "Re-seal every provider key under a new secret",
		Long: "Re-seal every stored provider key under the secret in FILE (base64 of 32 random bytes,\n" +
			"e.g. `openssl rand -base64 32 > FILE`), in one transaction: until it commits the old secret\n" +
			"stays in force. Stop `aiproxy serve` first. When the secret was the key file beside the\n" +
			"database, that file is replaced with the new secret; otherwise give the new one\n" +
			"(--secret-key-file FILE or AIPROXY_SECRET_KEY) from now on.\n\n" +
			"When the secret is lost, `aiproxy rekey --forget-provider-keys` deletes every stored provider\n" +
			"key (they cannot be opened any more) and keeps everything else: users, providers' settings,\n" +
			"limits, prices, usage, the audit log. Add the keys again with `aiproxy provider add`.",
		Example: "  openssl rand -base64 32 > new.key && aiproxy rekey --new-secret-key-file new.key",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runRekey(c.Context(), app, c.ErrOrStderr(), opts)
		},
	}
	c.Flags().StringVar(&opts.NewSecretKeyFile, "new-secret-key-file", "", "file holding the new secret (base64 of 32 random bytes)")
	c.Flags().BoolVar(&opts.Forget, "forget-provider-keys", false, "the secret is lost: delete every stored provider key (users, providers' settings, limits, usage stay); add the keys again after")
	return c
}

func runRekey(ctx context.Context, app *appContext, stderr io.Writer, opts rekeyOptions) error {
	if opts.Forget {
		app.forgetKeys = true
		if _, err := app.service(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%d provider keys forgotten; %s seals the keys you add again with aiproxy provider add\n",
			app.db.Forgotten(), app.db.SecretSource())
		if opts.NewSecretKeyFile == "" {
			return nil
		}
	}
	if opts.NewSecretKeyFile == "" {
		return fmt.Errorf("rekey: missing --new-secret-key-file FILE (see 'aiproxy rekey --help')")
	}
	if _, err := app.service(ctx); err != nil {
		return err
	}
	before := app.db.SecretSource()
	if err := app.db.Rekey(ctx, opts.NewSecretKeyFile); err != nil {
		return err
	}
	// Decoration, on stderr: stdout stays empty for scripts.
	if after := app.db.SecretSource(); after == before {
		fmt.Fprintf(stderr, "provider keys re-sealed; %s now holds the new secret\n", after)
	} else {
		fmt.Fprintf(stderr, "provider keys re-sealed; from now on give the secret in %s (--secret-key-file, or its text in AIPROXY_SECRET_KEY)\n", after)
	}
	return nil
}
