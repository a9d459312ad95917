package cmd

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func newProviderCmd(app *appContext) *cobra.Command {
	c := &cobra.Command{
		Use:   "provider",
		Short: "Add, list and remove provider hosts and their keys",
		Long:  "A provider is an upstream host (api.openai.com, api.groq.com, …) with a base URL and one or more real API keys, which aiproxy uses in turn.",
		RunE:  groupRunE,
	}
	c.AddCommand(
		newProviderAddCmd(app),
		newProviderListCmd(app),
		newProviderRemoveCmd(app),
		newProviderSetCmd(app),
		newProviderTestCmd(app),
	)
	return c
}

// maxKeyInput bounds what `-` reads from stdin for a key.
const maxKeyInput = 64 << 10

// readKey returns arg, or, when arg is "-", a key read from in. On a
// terminal it prompts "key: " on errOut and reads one line without echoing
// it, ending at Enter. Otherwise (a pipe, a file) it reads to the end and
// drops the trailing line ending, so `echo "$KEY" |` and `< file` both work.
func readKey(arg string, in io.Reader, errOut io.Writer) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	if in == nil {
		return "", nil
	}
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(errOut, "key: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(errOut)
		if err != nil {
			return "", fmt.Errorf("read key from terminal: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	b, err := io.ReadAll(io.LimitReader(in, maxKeyInput+1))
	if err != nil {
		return "", fmt.Errorf("read key from stdin: %w", err)
	}
	if len(b) > maxKeyInput {
		return "", aiproxy.Errorf(aiproxy.EINVALID, "key on stdin is longer than %d bytes", maxKeyInput)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

type providerAddOptions struct {
	Host, Key, BaseURL   string
	Alias, APIRoot, Auth string
	Inject, NoInject     bool
	InjectSet            bool // --inject-usage given
	NoInjectSet          bool // --no-inject-usage given
}

func newProviderAddCmd(app *appContext) *cobra.Command {
	var opts providerAddOptions
	c := &cobra.Command{
		Use:   "add HOST KEY",
		Short: "Store one more key for a provider host",
		Long: "Store KEY for HOST, creating the host if needed with base URL https://HOST (or --base-url).\n" +
			"The request path goes unchanged onto the base URL: /openai/v1/chat/completions for\n" +
			"api.groq.com goes to https://api.groq.com/openai/v1/chat/completions, so the base URL\n" +
			"is usually just https://HOST, without the /v1 or /openai that requests carry.\n" +
			"Give KEY as - to read it from stdin, which keeps it out of the shell history: on a\n" +
			"terminal, paste the key at the hidden key: prompt and press Enter; from a pipe or\n" +
			"a file, everything up to the end is the key, less its trailing newline.",
		Example: "  aiproxy provider add api.openai.com -          # paste the key, then Enter\n" +
			"  aiproxy provider add api.groq.com - < groq.key\n" +
			"  aiproxy provider add localhost:11434 ollama --base-url http://127.0.0.1:11434 --no-inject-usage",
		Args: argsExact("HOST", "KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Host, opts.Key = args[0], args[1]
			opts.InjectSet = c.Flags().Changed("inject-usage")
			opts.NoInjectSet = c.Flags().Changed("no-inject-usage")
			return runProviderAdd(c.Context(), app, c.InOrStdin(), c.ErrOrStderr(), opts)
		},
	}
	c.Flags().StringVar(&opts.BaseURL, "base-url", "", "base URL requests are sent to (default https://HOST)")
	c.Flags().StringVar(&opts.Alias, "alias", "", "another name for HOST, usable wherever HOST is: X-Host-Final, /ALIAS/…, model ALIAS/MODEL")
	c.Flags().StringVar(&opts.APIRoot, "api-root", "", "path of the provider's API under the base URL (default /v1; /openai/v1 for api.groq.com)")
	c.Flags().StringVar(&opts.Auth, "auth", "", "header the provider takes its key in: bearer, x-api-key, api-key or x-goog-api-key (default from HOST)")
	c.Flags().BoolVar(&opts.Inject, "inject-usage", false, "ask this host's streams for a usage chunk when the client did not (default for a new host)")
	c.Flags().BoolVar(&opts.NoInject, "no-inject-usage", false, "never add stream_options to this host's requests")
	return c
}

func runProviderAdd(ctx context.Context, app *appContext, in io.Reader, errOut io.Writer, opts providerAddOptions) error {
	var inject *bool
	switch {
	case opts.InjectSet && opts.NoInjectSet:
		return aiproxy.Errorf(aiproxy.EINVALID, "give --inject-usage or --no-inject-usage, not both")
	case opts.InjectSet:
		inject = &opts.Inject
	case opts.NoInjectSet:
		v := !opts.NoInject
		inject = &v
	}
	key, err := readKey(opts.Key, in, errOut)
	if err != nil {
		return err
	}
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	return svc.AddProviderKey(ctx, admin.ProviderKey{Host: opts.Host, Key: key, BaseURL: opts.BaseURL, InjectUsage: inject,
		Alias: opts.Alias, APIRoot: opts.APIRoot, Auth: opts.Auth})
}

func newProviderRemoveCmd(app *appContext) *cobra.Command {
	return &cobra.Command{
		Use:     "remove HOST [KEY]",
		Aliases: []string{"rm"},
		Short:   "Remove one key of a provider, or the whole host",
		Long:    "Remove KEY from HOST (- reads it from stdin); removing a host's last key removes the host. Without KEY, remove HOST and all its keys.",
		Example: "  aiproxy provider remove api.openai.com - < old-openai.key\n" +
			"  aiproxy provider remove api.groq.com",
		Args: argsRange(1, "HOST", "KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			key := ""
			if len(args) == 2 {
				var err error
				if key, err = readKey(args[1], c.InOrStdin(), c.ErrOrStderr()); err != nil {
					return err
				}
				if strings.TrimSpace(key) == "" {
					// An empty KEY must not fall through to "remove the host".
					return aiproxy.Errorf(aiproxy.EINVALID, "provider key must not be empty")
				}
			}
			svc, err := app.service(c.Context())
			if err != nil {
				return err
			}
			return svc.RemoveProvider(c.Context(), args[0], key)
		},
	}
}

type providerSetOptions struct {
	Host                          string
	BaseURL, Alias, APIRoot, Auth string
	Headers                       []string // "Name: value"; "Name:" removes
	Inject                        bool
	// Which flags were given: only those change.
	InjectSet, BaseURLSet, AliasSet, APIRootSet, AuthSet bool
}

func newProviderSetCmd(app *appContext) *cobra.Command {
	var opts providerSetOptions
	c := &cobra.Command{
		Use:   "set HOST [--base-url URL] [--alias NAME] [--api-root PATH] [--auth SCHEME] [--header 'Name: value']… [--inject-usage=true|false]",
		Short: "Change a provider's base URL or settings, keeping its keys",
		Long: "Change a provider's settings, keeping its keys; HOST may also be its alias. --base-url moves\n" +
			"the host to another base URL (its keys then go only there). --alias gives it another name,\n" +
			"usable wherever the host is (--alias '' removes it). --api-root is where its API starts under\n" +
			"the base URL (/v1; /openai/v1 for Groq): /v1/models and routed models go there. --auth is the\n" +
			"header its key goes in. --header pins a header sent with every request to it (repeatable;\n" +
			"'Name:' with no value removes one). --inject-usage=false stops aiproxy from adding\n" +
			"stream_options.include_usage to streamed requests, for hosts that refuse it.",
		Example: "  aiproxy provider set api.groq.com --base-url https://api.groq.com\n" +
			"  aiproxy provider set api.groq.com --alias groq\n" +
			"  aiproxy provider set api.openai.com --header 'OpenAI-Project: proj_123'\n" +
			"  aiproxy provider set api.groq.com --inject-usage=false",
		Args: argsExact("HOST"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Host = args[0]
			f := c.Flags()
			opts.InjectSet, opts.BaseURLSet, opts.AliasSet = f.Changed("inject-usage"), f.Changed("base-url"), f.Changed("alias")
			opts.APIRootSet, opts.AuthSet = f.Changed("api-root"), f.Changed("auth")
			if !opts.InjectSet && !opts.BaseURLSet && !opts.AliasSet && !opts.APIRootSet && !opts.AuthSet && len(opts.Headers) == 0 {
				return fmt.Errorf("provider set: nothing to change: give --base-url, --alias, --api-root, --auth, --header or --inject-usage (see '%s --help')", c.CommandPath())
			}
			return runProviderSet(c.Context(), app, opts)
		},
	}
	c.Flags().StringVar(&opts.BaseURL, "base-url", "", "new base URL requests are sent to, e.g. https://api.groq.com")
	c.Flags().StringVar(&opts.Alias, "alias", "", "another name for HOST ('' removes it)")
	c.Flags().StringVar(&opts.APIRoot, "api-root", "", "path of the provider's API under the base URL, e.g. /v1 or /openai/v1")
	c.Flags().StringVar(&opts.Auth, "auth", "", "header the provider takes its key in: bearer, x-api-key, api-key or x-goog-api-key")
	c.Flags().StringArrayVar(&opts.Headers, "header", nil, "'Name: value' sent with every request to HOST (repeatable; 'Name:' removes it)")
	c.Flags().BoolVar(&opts.Inject, "inject-usage", true, "ask this host's streams for a usage chunk when the client did not")
	return c
}

func runProviderSet(ctx context.Context, app *appContext, opts providerSetOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	var set admin.ProviderSettings
	if opts.BaseURLSet {
		set.BaseURL = &opts.BaseURL
	}
	if opts.AliasSet {
		set.Alias = &opts.Alias
	}
	if opts.APIRootSet {
		set.APIRoot = &opts.APIRoot
	}
	if opts.AuthSet {
		set.Auth = &opts.Auth
	}
	if opts.InjectSet {
		set.InjectUsage = &opts.Inject
	}
	for _, h := range opts.Headers {
		name, value, err := aiproxy.ParseHeader(h)
		if err != nil {
			return err
		}
		if set.Headers == nil {
			set.Headers = map[string]string{}
		}
		set.Headers[name] = value
	}
	_, err = svc.SetProvider(ctx, opts.Host, set)
	return err
}

type providerListOptions struct{ JSON bool }

func newProviderListCmd(app *appContext) *cobra.Command {
	var opts providerListOptions
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List provider hosts, base URLs and key hints (never keys)",
		Args:    argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			return runProviderList(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	addJSONFlag(c, &opts.JSON)
	return c
}

func runProviderList(ctx context.Context, app *appContext, out io.Writer, opts providerListOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	ps, err := svc.ListProviders(ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		if ps == nil {
			ps = []aiproxy.Provider{}
		}
		for i := range ps {
			ps[i].Keys = nil // never marshalled; dropped all the same
			if ps[i].KeyHints == nil {
				ps[i].KeyHints = []string{}
			}
		}
		return writeJSON(out, ps)
	}
	return providerListing(ps).write(out)
}

// keyHints lists the key hints, each with its state when it is not ok:
// "sk-…abcd (resting until 14:05:00Z), sk-…wxyz (rejected)".
func keyHints(p aiproxy.Provider) cell {
	hints := slices.Clone(p.KeyHints)
	c := cell{}
	if len(p.KeyStates) == len(hints) {
		for i, ks := range p.KeyStates {
			switch {
			case ks.State == aiproxy.KeyResting && ks.Until != nil:
				hints[i] += " (resting until " + ks.Until.UTC().Format(time.RFC3339) + ")"
				c.Tone = toneWarn
			case ks.State == aiproxy.KeyRejected:
				hints[i] += " (rejected)"
				c.Tone = toneWarn
			}
		}
	}
	c.Text = strings.Join(hints, ", ")
	return c
}

func providerListing(ps []aiproxy.Provider) listing {
	l := listing{Header: []string{"HOST", "ALIAS", "BASE URL", "API ROOT", "AUTH", "KEYS", "KEY HINTS", "INJECT USAGE", "HEADERS"}}
	for _, p := range ps {
		inject := cell{Text: "yes"}
		if !p.InjectUsage {
			inject = cell{Text: "no", Tone: toneMuted}
		}
		alias := cell{Text: p.Alias}
		if p.Alias == "" {
			alias = cell{Text: "-", Tone: toneMuted}
		}
		var pinned []string
		for _, name := range slices.Sorted(maps.Keys(p.Headers)) {
			pinned = append(pinned, name+": "+p.Headers[name])
		}
		headers := cell{Text: strings.Join(pinned, ", ")}
		if len(pinned) == 0 {
			headers = cell{Text: "-", Tone: toneMuted}
		}
		l.Rows = append(l.Rows, []cell{
			{Text: p.Host},
			alias,
			{Text: p.BaseURL},
			{Text: p.APIRoot},
			{Text: p.Auth},
			{Text: strconv.Itoa(p.KeyCount)},
			keyHints(p),
			inject,
			headers,
		})
	}
	return l
}
