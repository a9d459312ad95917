package cmd

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at release by goreleaser:
//
//	-X github.com/aiproxy/aiproxy/cmd.version={{.Version}}
//	-X github.com/aiproxy/aiproxy/cmd.commit={{.Commit}}
//	-X github.com/aiproxy/aiproxy/cmd.date={{.Date}}
var (
	version string
	commit  string
	date    string
)

func newVersionCmd(_ *appContext) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Args:  argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(c.OutOrStdout(), "aiproxy %s\n", versionText())
			return err
		},
	}
}

// versionText is what both `aiproxy version` and `aiproxy --version` print
// after "aiproxy ".
func versionText() string {
	v, c, d := versionInfo(debug.ReadBuildInfo)
	return fmt.Sprintf("%s (commit %s, built %s)", v, c, d)
}

// versionInfo returns the version, commit and build date: the linker's
// values when set, else what the Go toolchain recorded in the binary
// (module version, vcs.revision, vcs.time), else "dev" and "unknown".
func versionInfo(readBuildInfo func() (*debug.BuildInfo, bool)) (v, c, d string) {
	v, c, d = version, commit, date
	if bi, ok := readBuildInfo(); ok && bi != nil {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.time":
				if d == "" {
					d = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit == "" && c != "" {
			c += "-dirty"
		}
	}
	if v == "" {
		v = "dev"
	}
	if c == "" {
		c = "unknown"
	}
	if d == "" {
		d = "unknown"
	}
	return v, c, d
}
