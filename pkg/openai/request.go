package openai

// RequestInfo is what the proxy needs to know about a request body.
type RequestInfo struct {
	Model        string // top-level "model" when it is a string
	Stream       bool   // top-level "stream" is true
	IncludeUsage bool   // "stream_options" is an object whose "include_usage" is true
	// Valid reports whether the body is one JSON object in valid UTF-8,
	// nested at most 10000 deep. When it is false the other fields are zero.
	Valid bool
}

// reqScan is InspectRequest's result plus where the members that
// InjectIncludeUsage edits are.
type reqScan struct {
	info    RequestInfo
	obj     int // the top-level '{'
	streams int // how many "stream" keys
	options int // how many "stream_options" keys
	// The value of the last "stream_options": [optVal, optEnd), and how many
	// members it has when it is an object.
	optVal, optEnd, optMembers int
	// The "include_usage" members of the last "stream_options" object, and
	// the value range of the last one.
	incs           int
	incVal, incEnd int
}

// InspectRequest reads the top-level "model", "stream" and
// "stream_options.include_usage" of a JSON request body. A repeated key counts
// by its last occurrence, as in encoding/json and JavaScript; "stream" counts
// only when it is the literal true. The whole body is checked, in one pass
// with no recursion and no allocation besides the model string; string
// contents (a base64 image, say) are skipped eight bytes at a time.
func InspectRequest(body []byte) RequestInfo {
	r := scanRequest(body)
	return r.info
}

func scanRequest(body []byte) reqScan {
	var r reqScan
	if !r.scan(body) {
		return reqScan{}
	}
	r.info.Valid = true
	return r
}

func (r *reqScan) scan(body []byte) bool {
	sc := scanner{s: body}
	i := skipWS(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	r.obj = i
	o := sc.object(i, 1)
	for m, ok := o.next(); ok; m, ok = o.next() {
		var e int
		switch string(sc.keyBytes(m)) {
		case "model":
			if body[m.val] == '"' {
				r.info.Model, e = sc.stringAt(m.val)
				o.i = e
			} else {
				r.info.Model = ""
				e = o.skip(m)
			}
		case "stream":
			r.streams++
			e = o.skip(m)
			r.info.Stream = e >= 0 && string(body[m.val:e]) == "true"
		case "stream_options":
			r.options++
			r.optVal, r.optMembers, r.incs, r.info.IncludeUsage = m.val, 0, 0, false
			if body[m.val] == '{' {
				e = r.streamOptions(&sc, m.val)
				o.i = e
			} else {
				e = o.skip(m)
			}
			r.optEnd = e
		default:
			e = o.skip(m)
		}
		if e < 0 {
			return false
		}
	}
	return o.end >= 0 && skipWS(body, o.end) == len(body)
}

// streamOptions reads the stream_options object at s[i].
func (r *reqScan) streamOptions(sc *scanner, i int) int {
	o := sc.object(i, 2)
	for m, ok := o.next(); ok; m, ok = o.next() {
		r.optMembers++
		isInc := string(sc.keyBytes(m)) == "include_usage"
		e := o.skip(m)
		if e < 0 {
			return -1
		}
		if isInc {
			r.incs++
			r.incVal, r.incEnd = m.val, e
			r.info.IncludeUsage = string(sc.s[m.val:e]) == "true"
		}
	}
	return o.end
}

// InjectIncludeUsage asks the upstream for a usage chunk: for a streamed
// request whose client did not ask for usage, it returns a copy of body with
// "stream_options":{"include_usage":true} added and true. Every other byte is
// kept: the member goes right after the opening brace; an existing
// stream_options object gets "include_usage":true as its first member, or its
// include_usage value replaced by true; "stream_options":null becomes the
// object.
//
// It returns body and false when there is nothing to do (not a stream, usage
// already asked for) or when it cannot be done safely: a body InspectRequest
// finds invalid, a repeated "stream", "stream_options" or "include_usage" key
// (parsers disagree on which one counts), or a stream_options that is neither
// an object nor null. The caller strips the usage chunk from the response
// (NewStreamScanner with strip) exactly when ok is true.
//
// Only chat completions (and legacy completions) accept stream_options; the
// caller decides by path.
func InjectIncludeUsage(body []byte) ([]byte, bool) {
	r := scanRequest(body)
	if !r.info.Valid || !r.info.Stream || r.info.IncludeUsage || r.streams != 1 || r.options > 1 || r.incs > 1 {
		return body, false
	}
	switch {
	case r.options == 0:
		return splice(body, r.obj+1, r.obj+1, `"stream_options":{"include_usage":true},`), true
	case body[r.optVal] == 'n':
		return splice(body, r.optVal, r.optEnd, `{"include_usage":true}`), true
	case body[r.optVal] == '{' && r.incs == 0:
		ins := `"include_usage":true`
		if r.optMembers > 0 {
			ins += ","
		}
		return splice(body, r.optVal+1, r.optVal+1, ins), true
	case body[r.optVal] == '{':
		return splice(body, r.incVal, r.incEnd, "true"), true
	}
	return body, false
}

// splice returns a new slice: s with s[i:j] replaced by ins.
func splice(s []byte, i, j int, ins string) []byte {
	out := make([]byte, 0, len(s)-(j-i)+len(ins))
	out = append(out, s[:i]...)
	out = append(out, ins...)
	return append(out, s[j:]...)
}
