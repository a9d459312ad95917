package cmd

import (
	"github.com/spf13/cobra"
)

func newBackupCmd(app *appContext) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent snapshot of the database to FILE",
		Long: "Write a consistent snapshot of the database to FILE, which must not exist yet.\n" +
			"It is safe while `aiproxy serve` runs; never copy the live file with cp (its last commits live in the -wal).\n" +
			"To restore: stop serve; move aside DB, DB-wal and DB-shm; copy FILE to DB (mode 0600); start serve.",
		Example: "  aiproxy backup aiproxy-$(date +%F).db",
		Args:    argsExact("FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			svc, err := app.service(c.Context())
			if err != nil {
				return err
			}
			return svc.Backup(c.Context(), args[0])
		},
	}
}
