package openai

// chunk is what a walk over a response object (one streamed chunk, or a whole
// non-streamed body) found at its top level.
type chunk struct {
	usages    int  // how many "usage" keys
	usageObj  bool // the last one is an object ...
	usageNull bool // ... or null
	counts    counts

	groq    counts // x_groq.usage, Groq's own report
	hasGroq bool

	choices      bool // there is a "choices" key
	choicesEmpty bool // and its (last) value is []

	modelVal int // where the last string "model" value starts; -1 if none

	// cut0:cut1 is the byte range to remove to take out a "usage":null member
	// with its comma, as if the upstream had never written it.
	cut0, cut1 int
}

// walkChunk reads the JSON object p (p[0] == '{') with sc, in loose mode.
// It reports false when p is not one well-formed object.
func (sc *scanner) walkChunk(p []byte) (chunk, bool) {
	sc.s, sc.loose = p, true
	c := chunk{modelVal: -1}
	// The "usage":null member, as the index of the member, its key, the end
	// of its value, the end of the member before it, and the key after it.
	nullIdx, nullKey, nullEnd, nullPrev, nextKey := -1, 0, 0, -1, -1
	prevEnd := -1
	o := sc.object(0, 1)
	for idx := 0; ; idx++ {
		m, ok := o.next()
		if !ok {
			break
		}
		if idx == nullIdx+1 && nullIdx >= 0 {
			nextKey = m.key
		}
		var e int
		switch string(sc.keyBytes(m)) {
		case "usage":
			c.usages++
			c.usageObj, c.usageNull, c.counts = false, false, counts{}
			switch p[m.val] {
			case '{':
				c.counts, e = sc.usageObject(m.val, 2)
				o.i = e
				c.usageObj = true
			case 'n':
				e = o.skip(m)
				c.usageNull = true
				nullIdx, nullKey, nullEnd, nullPrev, nextKey = idx, m.key, e, prevEnd, -1
			default:
				e = o.skip(m)
			}
		case "choices":
			e = o.skip(m)
			c.choices = true
			c.choicesEmpty = e >= 0 && p[m.val] == '[' && skipWS(p, m.val+1) == e-1
		case "model":
			e = o.skip(m)
			if p[m.val] == '"' {
				c.modelVal = m.val
			} else {
				c.modelVal = -1
			}
		case "x_groq":
			if p[m.val] == '{' {
				e = sc.groqUsage(&o, m, &c)
			} else {
				e = o.skip(m)
			}
		default:
			e = o.skip(m)
		}
		if e < 0 {
			return c, false
		}
		prevEnd = e
	}
	if o.end < 0 || skipWS(p, o.end) != len(p) {
		return c, false
	}
	if c.usageNull && c.usages == 1 {
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

// groqUsage reads an x_groq object for its "usage".
func (sc *scanner) groqUsage(o *objReader, m member, c *chunk) int {
	in := sc.object(m.val, 2)
	for mm, ok := in.next(); ok; mm, ok = in.next() {
		var e int
		if string(sc.keyBytes(mm)) == "usage" && sc.s[mm.val] == '{' {
			var g counts
			g, e = sc.usageObject(mm.val, 3)
			in.i = e
			if g.set != 0 {
				c.groq, c.hasGroq = g, true
			}
		} else {
			e = in.skip(mm)
		}
		if e < 0 {
			return -1
		}
	}
	o.i = in.end
	return in.end
}
