package prices

import "github.com/aiproxy/aiproxy/pkg/aiproxy"

// Date is when the built-in table was last checked against the sources
// named below. Prices change; `aiproxy price set` overrides any of them.
const Date = "2026-12-06"

// builtin is the dated price table aiproxy ships (CONTRACT section 5), in US
// dollars per one million tokens: input, cached input (-1: the provider
// prices cached input like other input, or does not cache), output. Keys are
// the model names sent upstream; dated snapshots of a listed model find it
// through the rule in Lookup, so only snapshots priced differently from
// their alias are listed.
//
// Tiered prices (Gemini's above 200k prompt tokens) are given at their
// lower tier, so very long prompts cost more than aiproxy records. Where a
// figure could not be confirmed from a copy of the provider's own page, the
// provider's comment says so. A model whose price was not found is left
// out rather than guessed: a user with a spend limit is then refused it
// (403 model_not_priced) until an admin sets its price.
var builtin = map[string]row{
	// OpenAI: https://developers.openai.com/api/docs/pricing (Standard tier,
	// text tokens) and the model pages under /api/docs/models/, as of
	// 2026-12-06. gpt-5-mini, gpt-5-nano and gpt-5.4-nano were confirmed
	// from stored copies of their model pages; gpt-5.4 and gpt-5.4-mini
	// from 2026 third-party copies of the pricing page, which agree; the
	// others are the figures the pricing page has shown since each model's
	// launch (2024–2025), not re-checked against a 2026 copy. Newer models
	// (gpt-5.5, gpt-5.6, gpt-6 …) are left out: the copies found disagree
	// on their names and prices.
	"gpt-5.4":                {2.50, 0.25, 15.00},
	"gpt-5.4-mini":           {0.75, 0.075, 4.50},
	"gpt-5":                  {1.25, 0.125, 10.00},
	"gpt-5-mini":             {0.25, 0.025, 2.00},
	"gpt-5-nano":             {0.05, 0.005, 0.40},
	"gpt-5.4-nano":           {0.20, 0.02, 1.25},
	"gpt-4.1":                {2.00, 0.50, 8.00},
	"gpt-4.1-mini":           {0.40, 0.10, 1.60},
	"gpt-4.1-nano":           {0.10, 0.025, 0.40},
	"gpt-4o":                 {2.50, 1.25, 10.00},
	"gpt-4o-2024-05-13":      {5.00, -1, 15.00}, // the first gpt-4o snapshot kept its launch price
	"gpt-4o-mini":            {0.15, 0.075, 0.60},
	"o1":                     {15.00, 7.50, 60.00},
	"o3":                     {2.00, 0.50, 8.00},
	"o3-mini":                {1.10, 0.55, 4.40},
	"o4-mini":                {1.10, 0.275, 4.40},
	"gpt-4-turbo":            {10.00, -1, 30.00},
	"gpt-3.5-turbo":          {0.50, -1, 1.50},
	"text-embedding-3-small": {0.02, -1, 0},
	"text-embedding-3-large": {0.13, -1, 0},
	"text-embedding-ada-002": {0.10, -1, 0},

	// Anthropic: https://platform.claude.com/docs/en/about-claude/pricing
	// ("Model pricing"), stored copy read 2026-12-06. Cached input is the
	// "cache hits and refreshes" column; cache writes are priced as input
	// (CONTRACT section 5), although Anthropic charges 1.25× for them. The
	// Opus rows were read from that copy; Sonnet and Haiku rows are the
	// figures of the same page in 2025, not re-read (the copy was cut off
	// before them). Model ids of the Opus 4.6–5 rows follow the naming of the
	// earlier ones and were not confirmed. Claude Sonnet 5 and later are left
	// out: only third-party figures were found.
	"claude-opus-5":     {5.00, 0.50, 25.00},
	"claude-opus-4-8":   {5.00, 0.50, 25.00},
	"claude-opus-4-7":   {5.00, 0.50, 25.00},
	"claude-opus-4-6":   {5.00, 0.50, 25.00},
	"claude-opus-4-5":   {5.00, 0.50, 25.00},
	"claude-opus-4-1":   {15.00, 1.50, 75.00},
	"claude-opus-4":     {15.00, 1.50, 75.00},
	"claude-opus-4-0":   {15.00, 1.50, 75.00},
	"claude-sonnet-4-5": {3.00, 0.30, 15.00},
	"claude-sonnet-4":   {3.00, 0.30, 15.00},
	"claude-sonnet-4-0": {3.00, 0.30, 15.00},
	"claude-3-7-sonnet": {3.00, 0.30, 15.00},
	"claude-3-5-sonnet": {3.00, 0.30, 15.00},
	"claude-haiku-4-5":  {1.00, 0.10, 5.00},
	"claude-3-5-haiku":  {0.80, 0.08, 4.00},
	"claude-3-haiku":    {0.25, 0.03, 1.25},
	"claude-3-opus":     {15.00, 1.50, 75.00},

	// Google Gemini API: https://ai.google.dev/gemini-api/docs/pricing (paid
	// tier, Standard, text input; prompts up to 200k tokens), as of
	// 2026-12-06. Input and output of the 2.5 models were confirmed by
	// several 2026 copies citing that page; the cached-input figures are the
	// page's 2025 ones and were not re-checked (Google has lowered them
	// before). The Gemini 3 preview rows are launch prices, unconfirmed.
	"gemini-3-pro-preview":   {2.00, 0.20, 12.00},
	"gemini-3-flash-preview": {0.50, 0.05, 3.00},
	"gemini-2.5-pro":         {1.25, 0.125, 10.00},
	"gemini-2.5-flash":       {0.30, 0.03, 2.50},
	"gemini-2.5-flash-lite":  {0.10, 0.01, 0.40},
	"gemini-2.0-flash":       {0.10, 0.025, 0.40},
	"gemini-2.0-flash-lite":  {0.075, -1, 0.30},

	// Groq: https://groq.com/pricing (on-demand, per 1M tokens), as of
	// 2026-12-06. openai/gpt-oss-120b and its cache-hit price were confirmed
	// by a June 2026 copy citing that page; the others are the page's 2025
	// figures, not re-checked. Groq's model names hold a "/" for some models.
	"llama-3.3-70b-versatile":                       {0.59, -1, 0.79},
	"llama-3.1-8b-instant":                          {0.05, -1, 0.08},
	"openai/gpt-oss-120b":                           {0.15, 0.075, 0.60},
	"openai/gpt-oss-20b":                            {0.075, 0.0375, 0.30},
	"meta-llama/llama-4-scout-17b-16e-instruct":     {0.11, -1, 0.34},
	"meta-llama/llama-4-maverick-17b-128e-instruct": {0.20, -1, 0.60},
	"qwen/qwen3-32b":                                {0.29, -1, 0.59},
	"moonshotai/kimi-k2-instruct":                   {1.00, 0.50, 3.00},

	// Mistral: https://mistral.ai/pricing (La Plateforme, USD), as of
	// 2026-12-06. Copies of 2026 pages disagree on several figures, so only
	// dated snapshots and families whose price they agree on are listed;
	// moving aliases such as mistral-large-latest and mistral-medium-latest
	// (now pointing at newer, differently priced models) are left
	// unpriced on purpose. Mistral prices no cached input.
	"mistral-large-2411":  {2.00, -1, 6.00},
	"mistral-medium-2505": {0.40, -1, 2.00},
	"mistral-medium-2508": {0.40, -1, 2.00},
	"mistral-small":       {0.10, -1, 0.30}, // uncertain: one 2026 copy says 0.20/0.60 for Small 3.1
	"codestral":           {0.30, -1, 0.90},
	"magistral-medium":    {2.00, -1, 5.00},
	"magistral-small":     {0.50, -1, 1.50},
	"ministral-8b-2410":   {0.10, -1, 0.10},
	"ministral-3b-2410":   {0.04, -1, 0.04},
	"open-mistral-nemo":   {0.15, -1, 0.15},
	"pixtral-large-2411":  {2.00, -1, 6.00},
	"mistral-embed":       {0.10, -1, 0},

	// DeepSeek: https://api-docs.deepseek.com/quick_start/pricing (USD;
	// input cache miss, cache hit, output), the prices of 2025-09-29 for
	// DeepSeek-V3.2 behind both names. Not confirmed for 2026: a later copy
	// shows DeepSeek V4 models with peak and off-peak prices, which one
	// figure per model cannot express; set them with `aiproxy price set`.
	"deepseek-chat":     {0.28, 0.028, 0.42},
	"deepseek-reasoner": {0.28, 0.028, 0.42},
}

// row is one built-in price: input, cached input (-1: none), output.
type row struct{ input, cached, output float64 }

func (r row) price(model string) aiproxy.Price {
	p := aiproxy.Price{Model: model, Input: r.input, Output: r.output, BuiltIn: true}
	if r.cached >= 0 {
		c := r.cached
		p.CachedInput = &c
	}
	return p
}
