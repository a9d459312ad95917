package openai

// Usage is what an upstream reported about one response. A nil count means
// the upstream did not report it ("unknown"), which is not the same as 0.
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

// Indexes into counts.v.
const (
	cPrompt = iota
	cCompletion
	cTotal
	cReasoning
	cCached
	nCounts
)

// counts is a usage object as read from the wire, kept without pointers so
// that reading one allocates nothing.
type counts struct {
	v   [nCounts]int64
	set uint8 // bit i: v[i] was reported
}

func (c *counts) put(i int, v int64, ok bool) {
	if ok {
		c.v[i] = v
		c.set |= 1 << i
	} else {
		c.v[i] = 0
		c.set &^= 1 << i
	}
}

// usage returns c as a Usage with model.
func (c counts) usage(model string) Usage {
	u := Usage{Model: model}
	ptrs := [nCounts]**int64{&u.PromptTokens, &u.CompletionTokens, &u.TotalTokens, &u.ReasoningTokens, &u.CachedTokens}
	for i, p := range ptrs {
		if c.set&(1<<i) != 0 {
			v := c.v[i]
			*p = &v
		}
	}
	return u
}

// count parses a token count: a non-negative JSON integer that fits an int64.
// Anything else (null, a fraction, a string) is unknown.
func count(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	if b[0] == '0' && len(b) > 1 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	if v < 0 { // 19 digits can overflow
		return 0, false
	}
	return v, true
}

// usageObject reads the usage object whose '{' is at s[i], nested in d-1
// containers, and returns what it reported with the index after it (-1 on a
// syntax error). Besides the Chat Completions names it accepts the Responses
// API's input_tokens/output_tokens and their *_details.
func (sc *scanner) usageObject(i, d int) (counts, int) {
	var c counts
	o := sc.object(i, d)
	for m, ok := o.next(); ok; m, ok = o.next() {
		var e int
		switch string(sc.keyBytes(m)) {
		case "prompt_tokens", "input_tokens":
			e = sc.countMember(&o, m, &c, cPrompt)
		case "completion_tokens", "output_tokens":
			e = sc.countMember(&o, m, &c, cCompletion)
		case "total_tokens":
			e = sc.countMember(&o, m, &c, cTotal)
		case "completion_tokens_details", "output_tokens_details":
			e = sc.detailsMember(&o, m, &c, "reasoning_tokens", cReasoning)
		case "prompt_tokens_details", "input_tokens_details":
			e = sc.detailsMember(&o, m, &c, "cached_tokens", cCached)
		default:
			e = o.skip(m)
		}
		if e < 0 {
			return counts{}, -1
		}
	}
	return c, o.end
}

func (sc *scanner) countMember(o *objReader, m member, c *counts, idx int) int {
	e := o.skip(m)
	if e >= 0 {
		v, ok := count(sc.s[m.val:e])
		c.put(idx, v, ok)
	}
	return e
}

// detailsMember reads a *_tokens_details object for its one interesting count.
func (sc *scanner) detailsMember(o *objReader, m member, c *counts, name string, idx int) int {
	if sc.s[m.val] != '{' {
		c.put(idx, 0, false)
		return o.skip(m)
	}
	found := false
	in := sc.object(m.val, o.d+1)
	for mm, ok := in.next(); ok; mm, ok = in.next() {
		if string(sc.keyBytes(mm)) != name {
			if in.skip(mm) < 0 {
				return -1
			}
			continue
		}
		e := in.skip(mm)
		if e < 0 {
			return -1
		}
		v, ok := count(sc.s[mm.val:e])
		c.put(idx, v, ok)
		found = true
	}
	if !found {
		c.put(idx, 0, false)
	}
	o.i = in.end
	return in.end
}
