package cmd

import "github.com/spf13/cobra"

func newUserCmd(app *appContext) *cobra.Command     { return &cobra.Command{Use: "user"} }
func newProviderCmd(app *appContext) *cobra.Command { return &cobra.Command{Use: "provider"} }
func newStatsCmd(app *appContext) *cobra.Command    { return &cobra.Command{Use: "stats"} }
func newBackupCmd(app *appContext) *cobra.Command   { return &cobra.Command{Use: "backup"} }
func newVersionCmd(app *appContext) *cobra.Command  { return &cobra.Command{Use: "version"} }
