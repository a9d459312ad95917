// Package cmd wires aiproxy's commands (cobra) and configuration (viper:
// flags, then AIPROXY_* environment variables, then a YAML file, then
// defaults) to the service layer in pkg/. It holds no logic of its own.
package cmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
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
	v       *viper.Viper // reads the --config file
	streams Streams
	// lookupEnv reads the environment (nil: os.LookupEnv). Tests give each
	// run its own, so that runs with different variables can be parallel.
	lookupEnv func(string) (string, bool)
	// sources names where each flag's value came from when not from the
	// command line ("environment variable AIPROXY_X", "config file F"),
	// for error messages.
	sources map[string]string
	dbFlag  string // --db after configure
	// secretKeyFile is --secret-key-file after configure.
	secretKeyFile string
	// forgetKeys opens the store deleting every provider key first
	// (rekey --forget-provider-keys).
	forgetKeys bool
	// log receives the store's warnings; serve sets it before opening.
	log *slog.Logger

	once sync.Once
	db   *store.DB
	svc  *admin.Service
	err  error
}

// Execute runs aiproxy with args and returns the process exit code. Errors
// are printed as one line, "aiproxy: …", on the error stream.
func Execute(ctx context.Context, args []string, s Streams) int {
	return execute(ctx, args, s, os.LookupEnv)
}

// execute is Execute with the environment read through lookupEnv.
func execute(ctx context.Context, args []string, s Streams, lookupEnv func(string) (string, bool)) int {
	app := &appContext{v: viper.New(), streams: s, lookupEnv: lookupEnv}
	root := newRoot(app)
	root.SetArgs(args)
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	initCompletion(root) // after SetOut: cobra binds its writer at init
	c, err := root.ExecuteContextC(ctx)
	if err != nil {
		app.auditFailed(c, err)
	}
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
		Version:       versionText(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(c *cobra.Command, args []string) error {
			if err := app.configure(c); err != nil {
				return err
			}
			auditCLI(c, args)
			return nil
		},
	}
	root.SetVersionTemplate("aiproxy {{.Version}}\n")
	// cobra's own `completion bash|zsh|fish|powershell` (CONTRACT section 7).
	root.PersistentFlags().String("db", "", "SQLite database file (default "+defaultDBPath()+")")
	root.PersistentFlags().String("config", "", "YAML config file whose keys are the flag names")
	root.PersistentFlags().String("secret-key-file", "", "file holding the base64 secret that seals provider keys (default: AIPROXY_SECRET_KEY, else DB.key beside the database, created on first use)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%v (see '%s --help')", err, c.CommandPath())
	})
	root.AddCommand(
		newServeCmd(app),
		newUserCmd(app),
		newProviderCmd(app),
		newStatsCmd(app),
		newPriceCmd(app),
		newBackupCmd(app),
		newRekeyCmd(app),
		newMigrateCmd(app),
		newVersionCmd(app),
		newAuditCmd(app),
		newHealthCmd(app),
	)
	return root
}

// getenv looks key up in the environment; empty counts as unset.
func (a *appContext) getenv(key string) (string, bool) {
	lookup := a.lookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(key)
	return v, ok && v != ""
}

// notConfigurable are flags that neither the environment nor a config file
// sets.
var notConfigurable = map[string]bool{"help": true, "version": true, "config": true}

// envNames returns the environment variables that set flag name, first
// wins: AIPROXY_ + the name in upper case with - as _, and the seed
// worker's ACCESS_TOKEN.
func envNames(name string) []string {
	names := []string{"AIPROXY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
	if name == "access-token" {
		names = append(names, "ACCESS_TOKEN")
	}
	return names
}

// configure layers the command line → AIPROXY_* environment → config file
// → defaults into the flags of the command being run, parsing every value
// with the flag's own parser: a value that does not parse, or a config key
// that no command knows, is an error naming the variable or the file.
// Everything downstream reads the flags.
func (a *appContext) configure(c *cobra.Command) error {
	fs := c.Flags()
	a.sources = map[string]string{}
	if f := fs.Lookup("config"); f != nil && !f.Changed {
		if v, ok := a.getenv("AIPROXY_CONFIG"); ok {
			if err := f.Value.Set(v); err != nil {
				return err
			}
		}
	}
	cfg := ""
	if f := fs.Lookup("config"); f != nil {
		cfg = f.Value.String()
	}
	if cfg != "" {
		a.v.SetConfigFile(cfg)
		a.v.SetConfigType("yaml")
		if err := a.v.ReadInConfig(); err != nil {
			return fmt.Errorf("read config %s: %v", cfg, err)
		}
		if err := checkConfigKeys(cfg, a.v.AllSettings(), flagNames(c.Root())); err != nil {
			return err
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || notConfigurable[f.Name] {
			return
		}
		for _, env := range envNames(f.Name) {
			if v, ok := a.getenv(env); ok {
				a.sources[f.Name] = "environment variable " + env
				err = setFlag(f, v, a.sources[f.Name])
				return
			}
		}
		if cfg != "" && a.v.InConfig(f.Name) {
			a.sources[f.Name] = "config file " + cfg
			var v string
			if v, err = configValue(f, a.v.Get(f.Name)); err != nil {
				err = fmt.Errorf("config file %s: %s: %v", cfg, f.Name, err)
				return
			}
			err = setFlag(f, v, a.sources[f.Name])
		}
	})
	if f := fs.Lookup("db"); f != nil {
		a.dbFlag = f.Value.String()
	}
	if f := fs.Lookup("secret-key-file"); f != nil {
		a.secretKeyFile = f.Value.String()
	}
	return err
}

// source names where flag name's value came from, for an error about it:
// "--name", or the variable or file that set it.
func (a *appContext) source(name string) string {
	if s, ok := a.sources[name]; ok {
		return "--" + name + " (from " + s + ")"
	}
	return "--" + name
}

// setFlag parses v into f as the command line would have.
func setFlag(f *pflag.Flag, v, source string) error {
	if err := f.Value.Set(v); err != nil {
		return fmt.Errorf("%s: invalid value %q for --%s: want %s", source, v, f.Name, flagKind(f))
	}
	return nil
}

// flagKind says in words what a flag's value must look like.
func flagKind(f *pflag.Flag) string {
	switch t := f.Value.Type(); t {
	case "bool":
		return "true or false"
	case "int", "int64", "int32", "uint", "uint64":
		return "a whole number"
	case "duration":
		return "a duration such as 30s, 10m or 1h"
	case "stringSlice":
		return "a comma-separated list"
	default:
		return "a " + t
	}
}

// configValue turns a YAML value into the text its flag parses: scalars as
// written, a list (for list flags) joined with commas.
func configValue(f *pflag.Flag, v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case []any:
		if !strings.HasSuffix(f.Value.Type(), "Slice") {
			return "", fmt.Errorf("want one value, not a list")
		}
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		return "", fmt.Errorf("want a value, not a mapping")
	default:
		return fmt.Sprint(x), nil
	}
}

// flagNames is the set of every flag of every command under root: the keys
// a config file may hold, since one file may serve several commands.
func flagNames(root *cobra.Command) map[string]bool {
	names := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		add := func(f *pflag.Flag) {
			if !notConfigurable[f.Name] {
				names[f.Name] = true
			}
		}
		c.PersistentFlags().VisitAll(add)
		c.LocalFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return names
}

// checkConfigKeys refuses a config file key that is no command's flag: a
// misspelt access-token must not quietly turn the admin routes off.
func checkConfigKeys(file string, settings map[string]any, known map[string]bool) error {
	var unknown []string
	for k := range settings {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	msgs := make([]string, len(unknown))
	for i, k := range unknown {
		msgs[i] = fmt.Sprintf("unknown key %q", k)
		if s := closest(k, known); s != "" {
			msgs[i] += fmt.Sprintf(" (did you mean %q?)", s)
		}
	}
	return fmt.Errorf("config file %s: %s", file, strings.Join(msgs, ", "))
}

// closest returns the known name nearest to k by edit distance, if it is
// near enough to be a typo.
func closest(k string, known map[string]bool) string {
	best, bestD := "", 3
	for name := range known {
		if d := editDistance(k, name); d < bestD || d == bestD && best != "" && name < best {
			best, bestD = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// dbPath is the configured database file, or the per-user default.
func (a *appContext) dbPath() string {
	if p := a.dbFlag; p != "" {
		return p
	}
	return defaultDBPath()
}

// service opens the store and the service layer once.
func (a *appContext) service(ctx context.Context) (*admin.Service, error) {
	a.once.Do(func() {
		a.db, a.err = store.Open(ctx, a.dbPath(), a.storeOptions()...)
		if a.err == nil {
			a.svc = admin.New(a.db)
		}
	})
	return a.svc, a.err
}

// storeOptions says where the secret that seals provider keys comes from:
// --secret-key-file (or its variable or config key), else the base64 text
// in AIPROXY_SECRET_KEY, else the key file beside the database; and where
// the store's warnings go (serve's log).
func (a *appContext) storeOptions() []store.Option {
	var opts []store.Option
	if a.log != nil {
		opts = append(opts, store.WithLogger(a.log))
	}
	switch text, ok := a.getenv("AIPROXY_SECRET_KEY"); {
	case a.secretKeyFile != "":
		opts = append(opts, store.WithSecretKeyFile(a.secretKeyFile))
	case ok:
		opts = append(opts, store.WithSecretKey(text, "AIPROXY_SECRET_KEY"))
	}
	if a.forgetKeys {
		opts = append(opts, store.WithForgottenProviderKeys())
	}
	return opts
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
