package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// RequestInfo is what the proxy needs to know about a request body.
type RequestInfo struct {
	Model        string // top-level "model"
	Stream       bool   // top-level "stream" is true
	IncludeUsage bool   // "stream_options" is an object whose "include_usage" is true
	// Valid reports whether the body is one JSON object in valid UTF-8, as
	// encoding/json reads it (nested at most 10000 deep).
	Valid bool
	// Problem is empty when the body is fine. Otherwise it says, in a few
	// words fit for an error message, why the proxy must refuse the body (400)
	// rather than send it upstream: it is not one JSON object in valid UTF-8,
	// or parsers may disagree on what it asks for (a repeated or case-variant
	// "model", "stream", "stream_options" or "stream_options.include_usage"
	// key), or one of those has the wrong type ("model" not a string,
	// "stream" not a boolean or null, "stream_options" not an object or null).
	// When Problem is set, Model, Stream and IncludeUsage are zero.
	Problem string
	// MaxTokens is the most output the request asks for: the top-level
	// "max_tokens", "max_completion_tokens" or "max_output_tokens" (the
	// largest when several are given); 0 when none is a positive integer.
	MaxTokens int64
}

// reqScan is InspectRequest's result plus where the parts that
// InjectIncludeUsage edits are.
type reqScan struct {
	info               RequestInfo
	open               int  // just after the top-level '{'
	modelVal, modelEnd int  // the value of "model"
	opt                kind // the first byte of "stream_options"; 0 when absent
	optVal, optEnd     int  // its value
	optMembers         int  // how many members it has when it is an object
	incs               int  // how many of them are "include_usage"
	incVal, incEnd     int  // the value of that one
}

// InspectRequest reads the top-level "model", "stream" and
// "stream_options.include_usage" of a JSON request body, as encoding/json reads them,
// and checks the body as RequestInfo.Problem says.
func InspectRequest(body []byte) RequestInfo {
	return scanRequest(body).info
}

func scanRequest(body []byte) reqScan {
	// encoding/json replaces invalid UTF-8 where other parsers refuse it.
	if !utf8.Valid(body) {
		return reqScan{info: RequestInfo{Problem: "request body is not valid UTF-8"}}
	}
	var r reqScan
	var models, streams, options int
	problem := func(format string, a ...any) {
		if r.info.Problem == "" {
			r.info.Problem = fmt.Sprintf(format, a...)
		}
	}
	open, err := members(body, func(m field) error {
		switch string(m.key) {
		case "model":
			models++
			var v str
			_ = v.UnmarshalJSON(m.value())
			r.modelVal, r.modelEnd = m.start, m.end
			if r.info.Model = v.s; !v.ok {
				problem(`"model" is not a string`)
			}
		case "stream":
			streams++
			k := m.value()[0]
			if r.info.Stream = k == 't'; k != 't' && k != 'f' && k != 'n' {
				problem(`"stream" is not a boolean`)
			}
		case "stream_options":
			options++
			r.opt, r.optVal, r.optEnd = kind(m.value()[0]), m.start, m.end
			switch r.opt {
			case '{':
				r.streamOptions(body, problem)
			case 'n':
				r.optMembers, r.incs, r.info.IncludeUsage = 0, 0, false
			default:
				problem(`"stream_options" is not an object`)
			}
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			if v := maxTokens(m.value()); v > r.info.MaxTokens {
				r.info.MaxTokens = v
			}
		default:
			if k := foldsTo(m.key, "model", "stream", "stream_options"); k != "" {
				problem("ambiguous key %q (keys are case-sensitive)", m.name())
			}
		}
		return nil
	})
	switch {
	case err == errNotObject:
		return reqScan{info: RequestInfo{Problem: "request body is not a JSON object"}}
	case err != nil:
		return reqScan{info: RequestInfo{Problem: "request body is not valid JSON"}}
	}
	for _, d := range []struct {
		n    int
		name string
	}{{models, "model"}, {streams, "stream"}, {options, "stream_options"}, {r.incs, "stream_options.include_usage"}} {
		if d.n > 1 {
			problem("duplicate %q key", d.name)
		}
	}
	r.open, r.info.Valid = open, true
	if r.info.Problem != "" {
		r.info = RequestInfo{Valid: true, Problem: r.info.Problem}
	}
	return r
}

// streamOptions reads the stream_options object at body[r.optVal].
func (r *reqScan) streamOptions(body []byte, problem func(string, ...any)) {
	r.optMembers, r.incs, r.info.IncludeUsage = 0, 0, false
	_ = validMembers(body, r.optVal, func(m field) error {
		r.optMembers++
		if string(m.key) != "include_usage" {
			if foldsTo(m.key, "include_usage") != "" {
				problem("ambiguous key %q (keys are case-sensitive)", "stream_options."+m.name())
			}
			return nil
		}
		r.incs++
		r.incVal, r.incEnd = m.start, m.end
		r.info.IncludeUsage = m.value()[0] == 't'
		return nil
	})
}

// maxTokens reads a max_tokens value as encoding/json decodes it into a
// json.Number and Int64 reads that: an integer, or a string holding one;
// anything else is 0.
func maxTokens(v []byte) int64 {
	switch c := v[0]; {
	case c == '-' || '0' <= c && c <= '9':
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return n
		}
	case c == '"':
		var n json.Number
		if json.Unmarshal(v, &n) == nil {
			if i, err := n.Int64(); err == nil {
				return i
			}
		}
	}
	return 0
}

// foldsTo returns the name that key equals ignoring case, as encoding/json
// matches struct fields (a Go upstream reads "Stream" as "stream"; others
// do not); "" when there is none.
func foldsTo(key []byte, names ...string) string {
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return n
		}
	}
	return ""
}

// InjectIncludeUsage asks the upstream for a usage chunk: for a streamed
// request whose client did not ask for usage, it returns a copy of body with
// "stream_options":{"include_usage":true} added and true. Every other byte is
// kept: the field goes right after the opening brace; an existing
// stream_options object gets "include_usage":true as its first field, or its
// include_usage value replaced by true; "stream_options":null becomes the
// object.
//
// It returns body and false when there is nothing to do (not a stream, usage
// already asked for) or when InspectRequest reports a Problem. The caller
// strips the usage chunk from the response (NewStreamScanner with strip)
// exactly when ok is true.
//
// Only chat completions (and legacy completions) accept stream_options; the
// caller decides by path.
func InjectIncludeUsage(body []byte) ([]byte, bool) {
	return injectIncludeUsage(body, scanRequest(body))
}

func injectIncludeUsage(body []byte, r reqScan) ([]byte, bool) {
	if r.info.Problem != "" || !r.info.Stream || r.info.IncludeUsage {
		return body, false
	}
	switch {
	case r.opt == 0:
		return splice(body, r.open, r.open, `"stream_options":{"include_usage":true},`), true
	case r.opt == 'n':
		return splice(body, r.optVal, r.optEnd, `{"include_usage":true}`), true
	case r.incs == 0:
		ins := `"include_usage":true`
		if r.optMembers > 0 {
			ins += ","
		}
		return splice(body, r.optVal+1, r.optVal+1, ins), true
	default:
		return splice(body, r.incVal, r.incEnd, "true"), true
	}
}

// ReplaceModel returns body with its top-level "model" set to model, every
// other byte unchanged (model routing: "groq/llama-3.3-70b" goes to Groq as
// "llama-3.3-70b"). It reports false, and returns body as it is, when the
// body has a problem or no string model.
func ReplaceModel(body []byte, model string) ([]byte, bool) {
	return Inspect(body).ReplaceModel(model)
}

// Request is a request body as InspectRequest reads it, kept with where
// its parts are, so that it can be edited without being read again.
type Request struct {
	RequestInfo
	body []byte
	scan reqScan
}

// Inspect is InspectRequest keeping the body and where its model is.
func Inspect(body []byte) Request {
	r := scanRequest(body)
	return Request{RequestInfo: r.info, body: body, scan: r}
}

// ReplaceModel is the package's ReplaceModel on the body r read, without
// reading it again: what model routing adds to a request is the new body.
func (r Request) ReplaceModel(model string) ([]byte, bool) {
	if r.Problem != "" || r.scan.modelEnd == 0 {
		return r.body, false
	}
	q, err := json.Marshal(model)
	if err != nil {
		return r.body, false
	}
	return splice(r.body, r.scan.modelVal, r.scan.modelEnd, string(q)), true
}

// InjectIncludeUsage is the package's InjectIncludeUsage on the body r
// read, without reading it again.
func (r Request) InjectIncludeUsage() ([]byte, bool) {
	return injectIncludeUsage(r.body, r.scan)
}

// splice returns a new slice: s with s[i:j] replaced by ins.
func splice(s []byte, i, j int, ins string) []byte {
	out := make([]byte, 0, len(s)-(j-i)+len(ins))
	out = append(out, s[:i]...)
	out = append(out, ins...)
	return append(out, s[j:]...)
}
