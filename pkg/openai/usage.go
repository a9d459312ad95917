package openai

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode"
	"unicode/utf8"
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
		u.w.decode(b)
	}
	return nil
}

// decode reads the valid JSON object b as json.Unmarshal(b, w) would,
// without reflection: every field takes any value.
func (w *wireUsage) decode(b []byte) {
	fields(b, func(k, v []byte) {
		switch string(k) {
		case "PROMPT_TOKENS":
			_ = w.PromptTokens.UnmarshalJSON(v)
		case "COMPLETION_TOKENS":
			_ = w.CompletionTokens.UnmarshalJSON(v)
		case "TOTAL_TOKENS":
			_ = w.TotalTokens.UnmarshalJSON(v)
		case "INPUT_TOKENS":
			_ = w.InputTokens.UnmarshalJSON(v)
		case "OUTPUT_TOKENS":
			_ = w.OutputTokens.UnmarshalJSON(v)
		case "CACHE_CREATION_INPUT_TOKENS":
			_ = w.CacheCreation.UnmarshalJSON(v)
		case "CACHE_READ_INPUT_TOKENS":
			_ = w.CacheRead.UnmarshalJSON(v)
		case "PROMPT_TOKENS_DETAILS":
			w.PromptDetails.decode(v)
		case "INPUT_TOKENS_DETAILS":
			w.InputDetails.decode(v)
		case "COMPLETION_TOKENS_DETAILS":
			w.CompletionDetails.decode(v)
		case "OUTPUT_TOKENS_DETAILS":
			w.OutputDetails.decode(v)
		}
	})
}

// decode is UnmarshalJSON without reflection, for a valid JSON value.
func (o *object[T]) decode(b []byte) {
	*o = object[T]{}
	if b[0] != '{' {
		return
	}
	switch v := any(&o.v).(type) {
	case *details:
		fields(b, func(k, b []byte) {
			switch string(k) {
			case "CACHED_TOKENS":
				_ = v.Cached.UnmarshalJSON(b)
			case "REASONING_TOKENS":
				_ = v.Reasoning.UnmarshalJSON(b)
			}
		})
	case *envelope:
		fields(b, func(k, b []byte) {
			switch string(k) {
			case "MODEL":
				_ = v.Model.UnmarshalJSON(b)
			case "USAGE":
				_ = v.Usage.UnmarshalJSON(b)
			}
		})
	default:
		_ = json.Unmarshal(b, &o.v)
	}
}

// fields calls f with each member of the valid JSON object b, its key
// folded as encoding/json folds a key to match it to a struct field (each
// rune to the least of the runes that fold to it: ASCII letters to upper
// case). f then decodes b as json.Unmarshal would into a struct whose
// fields have UnmarshalJSON methods: each member, null included, goes to
// its field's method, and the last of repeated keys wins.
func fields(b []byte, f func(key, value []byte)) {
	_ = validMembers(b, 0, func(m field) error {
		var buf [32]byte
		k := buf[:0]
		for i := 0; i < len(m.key); {
			if c := m.key[i]; c < utf8.RuneSelf {
				if 'a' <= c && c <= 'z' {
					c -= 'a' - 'A'
				}
				k = append(k, c)
				i++
				continue
			}
			r, n := utf8.DecodeRune(m.key[i:])
			for { // the least rune that folds to r: 'K' for 'k' and the Kelvin sign
				r2 := unicode.SimpleFold(r)
				if r2 <= r {
					r = r2
					break
				}
				r = r2
			}
			k = utf8.AppendRune(k, r)
			i += n
		}
		f(k, m.value())
		return nil
	})
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
