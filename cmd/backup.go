package cmd

import (
	"github.com/spf13/cobra"
)

func newBackupCmd(app *appContext) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent snapshot of the database to FILE",
		Long: "Write a consistent snapshot of the database to FILE, which must not exist yet.\n" +
			"It is safe while `aiproxy serve` runs. To restore, stop serve and use FILE as --db.",
		Args: argsExact("FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			svc, err := app.service(c.Context())
			if err != nil {
				return err
			}
			return svc.Backup(c.Context(), args[0])
		},
	}
}
