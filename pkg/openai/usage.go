package openai

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Usage is what an upstream reported about one response, in Chat
// Completions' terms: the Responses API's input/output tokens are prompt and
// completion tokens; Anthropic's prompt tokens are input + cache_creation_input
// + cache_read_input tokens, of which cache_read_input are cached. A nil count
// means the upstream did not report it ("unknown"), which is not the same as 0.
type Usage struct {
	Model            string // the response's "model"; "" when none was seen
	PromptTokens     *int64
	CompletionTokens *int64
	TotalTokens      *int64
	ReasoningTokens  *int64 // completion_tokens_details.reasoning_tokens
	CachedTokens     *int64 // prompt_tokens_details.cached_tokens
}

// Known reports whether any token count is known.
func (u Usage) Known() bool {
	return u.PromptTokens != nil || u.CompletionTokens != nil || u.TotalTokens != nil ||
		u.ReasoningTokens != nil || u.CachedTokens != nil
}

// count is a token count as read from the wire: a non-negative JSON integer
// that fits an int64. Anything else (null, a fraction, a string) is unknown.
type count struct {
	v  int64
	ok bool
}

func (c *count) UnmarshalJSON(b []byte) error {
	*c = count{}
	if '0' <= b[0] && b[0] <= '9' && !bytes.ContainsAny(b, ".eE") {
		v, err := strconv.ParseInt(string(b), 10, 64)
		*c = count{v, err == nil}
	}
	return nil
}

// or returns c when it is known, else d.
func (c count) or(d count) count {
	if c.ok {
		return c
	}
	return d
}

// plus adds the known counts of cs to c, which must be known; the sum is
// unknown if it overflows.
func (c count) plus(cs ...count) count {
	for _, d := range cs {
		if d.ok {
			c.v += d.v
			c.ok = c.ok && c.v >= 0
		}
	}
	return c
}

// tokens is one report in Usage's terms.
type tokens struct {
	prompt, completion, total, reasoning, cached count
}

func (t tokens) known() bool {
	return t.prompt.ok || t.completion.ok || t.total.ok || t.reasoning.ok || t.cached.ok
}

func (t tokens) usage(model string) Usage {
	u := Usage{Model: model}
	for _, f := range []struct {
		c count
		p **int64
	}{{t.prompt, &u.PromptTokens}, {t.completion, &u.CompletionTokens}, {t.total, &u.TotalTokens}, {t.reasoning, &u.ReasoningTokens}, {t.cached, &u.CachedTokens}} {
		if f.c.ok {
			v := f.c.v
			*f.p = &v
		}
	}
	return u
}

// wireUsage is a usage object as Chat Completions, the Responses API and
// Anthropic Messages send it.
type wireUsage struct {
	PromptTokens      count           `json:"prompt_tokens"`
	CompletionTokens  count           `json:"completion_tokens"`
	TotalTokens       count           `json:"total_tokens"`
	InputTokens       count           `json:"input_tokens"`
	OutputTokens      count           `json:"output_tokens"`
	CacheCreation     count           `json:"cache_creation_input_tokens"`
	CacheRead         count           `json:"cache_read_input_tokens"`
	PromptDetails     object[details] `json:"prompt_tokens_details"`
	InputDetails      object[details] `json:"input_tokens_details"`
	CompletionDetails object[details] `json:"completion_tokens_details"`
	OutputDetails     object[details] `json:"output_tokens_details"`
}

type details struct {
	Cached    count `json:"cached_tokens"`
	Reasoning count `json:"reasoning_tokens"`
}

// openAI reads w as Chat Completions (prompt_tokens...) or the Responses
// API (input_tokens..., where input includes the cached tokens) report it.
func (w wireUsage) openAI() tokens {
	return tokens{
		prompt:     w.PromptTokens.or(w.InputTokens),
		completion: w.CompletionTokens.or(w.OutputTokens),
		total:      w.TotalTokens,
		reasoning:  w.CompletionDetails.v.Reasoning.or(w.OutputDetails.v.Reasoning),
		cached:     w.PromptDetails.v.Cached.or(w.InputDetails.v.Cached),
	}
}

// anthropic is an Anthropic Messages usage: a stream's message_start, updated
// by each message_delta, or a whole response's.
type anthropic struct {
	input, cacheCreation, cacheRead, output count
}

// update takes the counts that u reports.
func (a *anthropic) update(u anthropic) {
	a.input = u.input.or(a.input)
	a.cacheCreation = u.cacheCreation.or(a.cacheCreation)
	a.cacheRead = u.cacheRead.or(a.cacheRead)
	a.output = u.output.or(a.output)
}

// anthropic reads w as Anthropic Messages report it.
func (w wireUsage) anthropic() anthropic {
	return anthropic{input: w.InputTokens, cacheCreation: w.CacheCreation, cacheRead: w.CacheRead, output: w.OutputTokens}
}

// tokens maps a to Usage's terms: Anthropic's input_tokens leave out the
// cached ones, which OpenAI's prompt_tokens include.
func (a anthropic) tokens() tokens {
	t := tokens{completion: a.output, cached: a.cacheRead}
	if a.input.ok {
		t.prompt = a.input.plus(a.cacheCreation, a.cacheRead)
	}
	if t.prompt.ok && t.completion.ok {
		t.total = t.prompt.plus(t.completion)
	}
	return t
}

// usageValue is a "usage" member: its kind tells an object from null.
type usageValue struct {
	kind kind
	w    wireUsage
}

func (u *usageValue) UnmarshalJSON(b []byte) error {
	*u = usageValue{kind: kind(b[0])}
	if b[0] == '{' {
		_ = json.Unmarshal(b, &u.w) // every field takes any value
	}
	return nil
}

// object is a value decoded into T when it is a JSON object, else the zero T.
type object[T any] struct{ v T }

func (o *object[T]) UnmarshalJSON(b []byte) error {
	*o = object[T]{}
	if b[0] == '{' {
		_ = json.Unmarshal(b, &o.v) // T's fields take any value
	}
	return nil
}
