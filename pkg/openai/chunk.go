package openai

// chunk is what a walk over a response object (one streamed event's data, or
// a whole non-streamed body) found at its top level.
//
// It keeps the values that hold usage as they are, to be decoded by report
// only when they are there: a chunk is walked on a stream's copy path, and
// decoded usage objects would make its frame, and the stack of every open
// stream, kilobytes larger.
type chunk struct {
	usages int    // how many "usage" keys
	usage  []byte // the last one's value
	model  str
	typ    str // "type": Anthropic's message, message_start, message_delta...

	groq     []byte // x_groq: Groq's own usage report
	message  []byte // Anthropic's message_start carries the message
	response []byte // Responses API events carry the response

	choices      bool // there is a "choices" key
	choicesEmpty bool // and its (last) value is []

	// cut0:cut1 is the byte range to remove to take out a "usage":null member
	// with its comma, as if the upstream had never written it.
	cut0, cut1 int
}

// envelope is an object that may carry a model and a usage.
type envelope struct {
	Model str        `json:"model"`
	Usage usageValue `json:"usage"`
}

// walkChunk reads the JSON object p. It reports false when p is not one
// well-formed object (as encoding/json reads it).
func walkChunk(p []byte) (chunk, bool) {
	var c chunk
	// The "usage":null member, as the index of the member, its key, the end
	// of its value, the end of the member before it, and the key after it.
	nullIdx, nullKey, nullEnd, nullPrev, nextKey := -1, 0, 0, -1, -1
	prevEnd, idx := -1, 0
	_, err := members(p, func(m field) error {
		if idx == nullIdx+1 && nullIdx >= 0 {
			nextKey = m.keyStart
		}
		// The UnmarshalJSON methods here never fail.
		switch v := m.value(); string(m.key) {
		case "usage":
			c.usages++
			c.usage = v
			if v[0] == 'n' {
				nullIdx, nullKey, nullEnd, nullPrev, nextKey = idx, m.keyStart, m.end, prevEnd, -1
			}
		case "model":
			_ = c.model.UnmarshalJSON(v)
		case "type":
			_ = c.typ.UnmarshalJSON(v)
		case "x_groq":
			c.groq = v
		case "message":
			c.message = v
		case "response":
			c.response = v
		case "choices":
			c.choices = true
			c.choicesEmpty = v[0] == '[' && skipWS(v, 1) == len(v)-1
		}
		prevEnd = m.end
		idx++
		return nil
	})
	if err != nil {
		return c, false
	}
	if c.usageKind() == 'n' && c.usages == 1 {
		switch {
		case nullPrev >= 0: // `,"usage":null` after another member
			c.cut0, c.cut1 = nullPrev, nullEnd
		case nextKey >= 0: // `"usage":null,` before the next member
			c.cut0, c.cut1 = nullKey, nextKey
		default: // the only member
			c.cut0, c.cut1 = nullKey, nullEnd
		}
	}
	return c, true
}

// report is what one chunk says about usage.
type report struct {
	model     string
	tokens    tokens    // a Chat Completions or Responses API usage
	groq      tokens    // x_groq.usage
	anthropic bool      // an Anthropic Messages usage, in ant
	start     bool      // from message_start: it replaces earlier ones
	ant       anthropic // when anthropic
}

// usageKind is the first byte of the last "usage" value; 0 when none.
func (c *chunk) usageKind() kind {
	if len(c.usage) == 0 {
		return 0
	}
	return kind(c.usage[0])
}

// report reads c as Chat Completions, the Responses API (whose usage and
// model are in "response") or Anthropic Messages (message_start's in
// "message", message_delta's and a whole message's at the top).
//
// The values are decoded by functions that are not inlined and return
// only what report keeps, so that report's frame (on the copy path of a
// stream) stays small and only a chunk that holds usage goes deeper.
func (c *chunk) report() report {
	r := report{model: c.model.s}
	if c.groq != nil {
		_, r.groq = envelopeTokens(c.groq)
	}
	switch c.typ.s {
	case "message_start":
		r.anthropic, r.start = true, true
		r.model, r.ant = messageStart(c.message)
		return r
	case "message", "message_delta":
		if r.anthropic = c.usageKind() == '{'; r.anthropic {
			r.ant = anthropicUsage(c.usage)
		}
		return r
	}
	if c.usageKind() == '{' {
		r.tokens = usageTokens(c.usage)
	}
	if c.response != nil && (r.model == "" || !r.tokens.known()) {
		model, t := envelopeTokens(c.response)
		if r.model == "" {
			r.model = model
		}
		if !r.tokens.known() {
			r.tokens = t
		}
	}
	return r
}

// envelopeTokens decodes an envelope kept by walkChunk (the zero one when
// it is not an object, as encoding/json would) and returns its model and
// usage.
//
//go:noinline
func envelopeTokens(v []byte) (string, tokens) {
	var o object[envelope]
	o.decode(v)
	return o.v.Model.s, o.v.Usage.w.openAI()
}

// messageStart is envelopeTokens for Anthropic's message_start.
//
//go:noinline
func messageStart(v []byte) (string, anthropic) {
	var o object[envelope]
	if len(v) > 0 {
		o.decode(v)
	}
	return o.v.Model.s, o.v.Usage.w.anthropic()
}

// usageTokens decodes a "usage" object as Chat Completions or the
// Responses API report it.
//
//go:noinline
func usageTokens(v []byte) tokens {
	var u usageValue
	_ = u.UnmarshalJSON(v)
	return u.w.openAI()
}

// anthropicUsage decodes a "usage" object as Anthropic Messages report it.
//
//go:noinline
func anthropicUsage(v []byte) anthropic {
	var u usageValue
	_ = u.UnmarshalJSON(v)
	return u.w.anthropic()
}
