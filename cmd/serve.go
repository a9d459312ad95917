package cmd

import "github.com/spf13/cobra"

// newServeCmd is a placeholder until the proxy lands.
func newServeCmd(app *appContext) *cobra.Command {
	return &cobra.Command{Use: "serve", Short: "Run the proxy", RunE: func(c *cobra.Command, _ []string) error { return nil }}
}
