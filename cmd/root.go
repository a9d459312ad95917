// Package cmd wires aiproxy's commands (cobra) and configuration (viper:
// flags, then AIPROXY_* environment variables, then a YAML file, then
// defaults) to the service layer in pkg/. It holds no logic of its own.
package cmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// Streams are the standard streams a command reads and writes.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// appContext is what every command shares: resolved configuration and the
// store and service, opened on first use so that `version` and `--help`
// never touch the database.
type appContext struct {
	v       *viper.Viper
	streams Streams

	once sync.Once
	db   *store.DB
	svc  *admin.Service
	err  error
}

// Execute runs aiproxy with args and returns the process exit code. Errors
// are printed as one line, "aiproxy: …", on the error stream.
func Execute(ctx context.Context, args []string, s Streams) int {
	app := &appContext{v: viper.New(), streams: s}
	root := newRoot(app)
	root.SetArgs(args)
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	err := root.ExecuteContext(ctx)
	app.close()
	if err != nil {
		fmt.Fprintln(s.Err, "aiproxy: "+oneLine(err.Error()))
		return 1
	}
	return 0
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newRoot(app *appContext) *cobra.Command {
	root := &cobra.Command{
		Use:           "aiproxy",
		Short:         "Share AI provider accounts through per-user keys",
		Long:          "aiproxy is an OpenAI-compatible proxy: each user gets an sk-cfw… key, aiproxy swaps in the real provider key and streams the answer back.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			return app.configure(c)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().String("db", "", "SQLite database file (default "+defaultDBPath()+")")
	root.PersistentFlags().String("config", "", "YAML config file whose keys are the flag names")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%v (see '%s --help')", err, c.CommandPath())
	})
	root.AddCommand(
		newServeCmd(app),
		newUserCmd(app),
		newProviderCmd(app),
		newStatsCmd(app),
		newBackupCmd(app),
		newVersionCmd(app),
	)
	return root
}

// configure layers flags → AIPROXY_* environment → config file → defaults
// for the flags of the command being run.
func (a *appContext) configure(c *cobra.Command) error {
	v := a.v
	v.SetEnvPrefix("AIPROXY")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	var bindErr error
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if err := v.BindPFlag(f.Name, f); err != nil && bindErr == nil {
			bindErr = err
		}
	})
	if bindErr != nil {
		return bindErr
	}
	// The seed worker's variable names keep working.
	if err := v.BindEnv("access-token", "AIPROXY_ACCESS_TOKEN", "ACCESS_TOKEN"); err != nil {
		return err
	}
	if cfg := v.GetString("config"); cfg != "" {
		v.SetConfigFile(cfg)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("read config %s: %v", cfg, err)
		}
	}
	return nil
}

// dbPath is the configured database file, or the per-user default.
func (a *appContext) dbPath() string {
	if p := a.v.GetString("db"); p != "" {
		return p
	}
	return defaultDBPath()
}

// service opens the store and the service layer once.
func (a *appContext) service(ctx context.Context) (*admin.Service, error) {
	a.once.Do(func() {
		a.db, a.err = store.Open(ctx, a.dbPath())
		if a.err == nil {
			a.svc = admin.New(a.db)
		}
	})
	return a.svc, a.err
}

func (a *appContext) close() {
	if a.db != nil {
		a.db.Close()
	}
}

// defaultDBPath is one per-user data path, the same from any working
// directory: $XDG_DATA_HOME/aiproxy (or ~/.local/share/aiproxy) on Unix,
// ~/Library/Application Support/aiproxy on macOS, %LocalAppData%\aiproxy on
// Windows.
func defaultDBPath() string {
	var dir string
	switch runtime.GOOS {
	case "windows":
		dir = os.Getenv("LocalAppData")
	case "darwin":
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, "Library", "Application Support")
		}
	default:
		dir = os.Getenv("XDG_DATA_HOME")
		if dir == "" || !filepath.IsAbs(dir) {
			if home, err := os.UserHomeDir(); err == nil {
				dir = filepath.Join(home, ".local", "share")
			}
		}
	}
	if dir == "" {
		dir = "."
	}
	return filepath.Join(dir, "aiproxy", "aiproxy.db")
}
