package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

type migrateOptions struct {
	From, To, FromSecretKeyFile string
}

// newMigrateCmd is `aiproxy migrate --from FILE --to postgres://…` (CONTRACT
// section 8). It has no HTTP twin: it reads a SQLite file on the host, with
// that file's serve stopped.
func newMigrateCmd(app *appContext) *cobra.Command {
	var opts migrateOptions
	c := &cobra.Command{
		Use:   "migrate --from FILE --to postgres://USER@HOST/DB",
		Short: "Copy a SQLite database into an empty PostgreSQL one",
		Long: "Copy everything in the SQLite database FILE (users and their keys, providers, provider keys,\n" +
			"limits, prices, usage and its daily totals, the audit log) into the PostgreSQL database --to,\n" +
			"which must be empty, in one transaction, keeping every id. Provider keys are opened with FILE's\n" +
			"secret (the key file beside it, or --from-secret-key-file) and sealed again under the target's\n" +
			"(AIPROXY_SECRET_KEY or --secret-key-file, as every command on PostgreSQL). Stop the serve of\n" +
			"FILE first. --to defaults to --db (or AIPROXY_DB) when that is a PostgreSQL DSN.",
		Example: "  aiproxy migrate --from \"$AIPROXY_DB\" --to postgres://aiproxy@db.internal/aiproxy --secret-key-file secret.key",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runMigrate(c.Context(), app, c.ErrOrStderr(), opts)
		},
	}
	c.Flags().StringVar(&opts.From, "from", "", "the SQLite database file to copy")
	c.Flags().StringVar(&opts.To, "to", "", "the empty PostgreSQL database to copy into (postgres://…)")
	c.Flags().StringVar(&opts.FromSecretKeyFile, "from-secret-key-file", "", "file holding the secret of --from's provider keys (default: the key file beside it)")
	return c
}

func runMigrate(ctx context.Context, app *appContext, stderr io.Writer, opts migrateOptions) error {
	if opts.From == "" {
		return fmt.Errorf("migrate: missing --from FILE (see 'aiproxy migrate --help')")
	}
	if opts.To == "" && store.IsPostgres(app.dbPath()) {
		opts.To = app.dbPath()
	}
	switch {
	case opts.To == "":
		return fmt.Errorf("migrate: missing --to postgres://USER@HOST/DB (see 'aiproxy migrate --help')")
	case !store.IsPostgres(opts.To):
		return aiproxy.Errorf(aiproxy.EINVALID, "migrate: --to must be a PostgreSQL DSN (postgres://USER@HOST/DB), not a file")
	case store.IsPostgres(opts.From):
		return aiproxy.Errorf(aiproxy.EINVALID, "migrate: --from must be a SQLite file; to copy PostgreSQL, use pg_dump")
	}
	// Open would create a missing file: a typo must not copy an empty one.
	if fi, err := os.Stat(opts.From); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return aiproxy.Errorf(aiproxy.EINVALID, "migrate: --from %s: no such file", opts.From)
		}
		return aiproxy.Errorf(aiproxy.EINVALID, "migrate: --from %s: %v", opts.From, errors.Unwrap(err))
	} else if fi.IsDir() {
		return aiproxy.Errorf(aiproxy.EINVALID, "migrate: --from %s is a directory", opts.From)
	}
	var srcOpts []store.Option
	if opts.FromSecretKeyFile != "" {
		srcOpts = append(srcOpts, store.WithSecretKeyFile(opts.FromSecretKeyFile))
	}
	src, err := store.Open(ctx, opts.From, srcOpts...)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := store.Open(ctx, opts.To, app.storeOptions()...)
	if err != nil {
		return err
	}
	defer dst.Close()
	copied, err := src.CopyTo(ctx, dst)
	if err != nil {
		return err
	}
	// Decoration, on stderr: stdout stays empty for scripts.
	var parts []string
	for _, c := range copied {
		parts = append(parts, fmt.Sprintf("%s %d", c.Table, c.Rows))
	}
	fmt.Fprintf(stderr, "copied %s into %s (rows: %s); provider keys sealed under %s\n",
		opts.From, store.RedactDSN(opts.To), strings.Join(parts, ", "), dst.SecretSource())
	return nil
}
