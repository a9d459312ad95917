package openai

// chunk is what a walk over a response object (one streamed event's data, or
// a whole non-streamed body) found at its top level.
type chunk struct {
	usages int        // how many "usage" keys
	usage  usageValue // the last one
	model  str
	typ    str // "type": Anthropic's message, message_start, message_delta...

	groq     object[envelope] // x_groq: Groq's own usage report
	message  object[envelope] // Anthropic's message_start carries the message
	response object[envelope] // Responses API events carry the response

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
			_ = c.usage.UnmarshalJSON(v)
			if c.usage.kind == 'n' {
				nullIdx, nullKey, nullEnd, nullPrev, nextKey = idx, m.keyStart, m.end, prevEnd, -1
			}
		case "model":
			_ = c.model.UnmarshalJSON(v)
		case "type":
			_ = c.typ.UnmarshalJSON(v)
		case "x_groq":
			_ = c.groq.UnmarshalJSON(v)
		case "message":
			_ = c.message.UnmarshalJSON(v)
		case "response":
			_ = c.response.UnmarshalJSON(v)
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
	if c.usage.kind == 'n' && c.usages == 1 {
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
	ant       wireUsage // when anthropic
}

// report reads c as Chat Completions, the Responses API (whose usage and
// model are in "response") or Anthropic Messages (message_start's in
// "message", message_delta's and a whole message's at the top).
func (c *chunk) report() report {
	r := report{model: c.model.s, groq: c.groq.v.Usage.w.openAI()}
	switch c.typ.s {
	case "message_start":
		r.anthropic, r.start, r.ant = true, true, c.message.v.Usage.w
		r.model = c.message.v.Model.s
		return r
	case "message", "message_delta":
		r.anthropic, r.ant = c.usage.kind == '{', c.usage.w
		return r
	}
	if r.model == "" {
		r.model = c.response.v.Model.s
	}
	r.tokens = c.usage.w.openAI()
	if !r.tokens.known() {
		r.tokens = c.response.v.Usage.w.openAI()
	}
	return r
}
