package cmd

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/prices"
)

func newPriceCmd(app *appContext) *cobra.Command {
	c := &cobra.Command{
		Use:   "price",
		Short: "List, set and remove model prices (US dollars per 1M tokens)",
		Long: "aiproxy prices each request from the upstream's usage and stores the cost with it\n" +
			"(stats shows it as cost_usd). It ships a price table for the common models of OpenAI,\n" +
			"Anthropic, Google, Groq, Mistral and DeepSeek, checked on " + prices.Date + "; price set\n" +
			"overrides a built-in price or adds a model. A price applies to the model name sent\n" +
			"upstream, and to its dated snapshots (gpt-4o covers gpt-4o-2024-08-06).",
		RunE: groupRunE,
	}
	c.AddCommand(
		newPriceListCmd(app),
		newPriceSetCmd(app),
		newPriceRemoveCmd(app),
	)
	return c
}

type priceSetOptions struct {
	Model                      string
	Input, Output, CachedInput string
	CachedSet                  bool
}

func newPriceSetCmd(app *appContext) *cobra.Command {
	var opts priceSetOptions
	c := &cobra.Command{
		Use:   "set MODEL --input USD --output USD [--cached-input USD]",
		Short: "Set the price of a model, overriding a built-in one",
		Long: "Set MODEL's price in US dollars per 1M tokens: --input for prompt tokens, --output for\n" +
			"completion tokens (reasoning included), and --cached-input for prompt tokens read from\n" +
			"the provider's cache (without it they cost --input). serve uses it from its next request;\n" +
			"the cost of requests already recorded does not change.",
		Example: "  aiproxy price set gpt-4o --input 2.50 --output 10 --cached-input 1.25\n" +
			"  aiproxy price set openai/gpt-oss-120b --input 0.15 --output 0.60",
		Args: argsExact("MODEL"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Model = args[0]
			opts.CachedSet = c.Flags().Changed("cached-input")
			return runPriceSet(c.Context(), app, opts, c.Flags().Changed("input"), c.Flags().Changed("output"))
		},
	}
	c.Flags().StringVar(&opts.Input, "input", "", "US dollars per 1M prompt tokens (required)")
	c.Flags().StringVar(&opts.Output, "output", "", "US dollars per 1M completion tokens (required)")
	c.Flags().StringVar(&opts.CachedInput, "cached-input", "", "US dollars per 1M cached prompt tokens (default: the --input price)")
	return c
}

func runPriceSet(ctx context.Context, app *appContext, opts priceSetOptions, inputSet, outputSet bool) error {
	in := admin.PriceInput{Model: opts.Model}
	for _, f := range []struct {
		name, v string
		set     bool
		dst     **float64
	}{
		{"input", opts.Input, inputSet, &in.Input},
		{"output", opts.Output, outputSet, &in.Output},
		{"cached input", opts.CachedInput, opts.CachedSet, &in.CachedInput},
	} {
		if !f.set {
			continue // the service names a missing required price
		}
		v, err := admin.ParsePrice(f.name, f.v)
		if err != nil {
			return err
		}
		*f.dst = &v
	}
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	_, err = svc.SetPrice(ctx, in)
	return err
}

func newPriceRemoveCmd(app *appContext) *cobra.Command {
	return &cobra.Command{
		Use:     "remove MODEL",
		Aliases: []string{"rm"},
		Short:   "Remove the price set for a model (a built-in price applies again)",
		Long: "Remove the price set for MODEL with price set. A built-in price of the same model\n" +
			"applies again; a built-in price alone cannot be removed (override it instead).",
		Example: "  aiproxy price set gpt-4o --input 2 --output 8   # override the built-in price\n" +
			"  aiproxy price remove gpt-4o                       # the built-in price applies again",
		Args: argsExact("MODEL"),
		RunE: func(c *cobra.Command, args []string) error {
			svc, err := app.service(c.Context())
			if err != nil {
				return err
			}
			return svc.RemovePrice(c.Context(), args[0])
		},
	}
}

type priceListOptions struct{ JSON bool }

func newPriceListCmd(app *appContext) *cobra.Command {
	var opts priceListOptions
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the prices in force, built-in ones marked",
		Args:    argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			return runPriceList(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	addJSONFlag(c, &opts.JSON)
	return c
}

func runPriceList(ctx context.Context, app *appContext, out io.Writer, opts priceListOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	ps, err := svc.ListPrices(ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		if ps == nil {
			ps = []aiproxy.Price{}
		}
		return writeJSON(out, ps)
	}
	return priceListing(ps).write(out)
}

func priceListing(ps []aiproxy.Price) listing {
	l := listing{Header: []string{"MODEL", "INPUT", "OUTPUT", "CACHED INPUT", "SOURCE"}}
	for _, p := range ps {
		cached := cell{Text: "-", Tone: toneMuted} // priced as input
		if p.CachedInput != nil {
			cached = cell{Text: formatUSD(*p.CachedInput)}
		}
		source := cell{Text: "built-in " + prices.Date, Tone: toneMuted}
		if !p.BuiltIn {
			source = cell{Text: "set"}
			if _, ok := prices.BuiltinPrice(p.Model); ok {
				source = cell{Text: "set, replaces built-in", Tone: toneWarn}
			}
		}
		l.Rows = append(l.Rows, []cell{{Text: p.Model}, {Text: formatUSD(p.Input)}, {Text: formatUSD(p.Output)}, cached, source})
	}
	return l
}

// formatUSD prints a price with at least two decimals and no more than it
// needs: 2.50, 0.075, 10.00.
func formatUSD(v float64) string {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	i := strings.IndexByte(s, '.')
	switch {
	case i < 0:
		return s + ".00"
	case len(s)-i == 2:
		return s + "0"
	}
	return s
}
