package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"unicode/utf8"
)

// The reference walk: the json.Decoder walk that members replaced, kept to
// check the hand-written one against encoding/json.

type refField struct {
	name     string
	keyStart int
	b        []byte
	dec      *json.Decoder
	read     bool
}

type refSkip struct{}

func (*refSkip) UnmarshalJSON([]byte) error { return nil }

func (m *refField) decode(v any) (start, end int, err error) {
	if v == nil {
		v = &refSkip{}
	}
	afterKey := int(m.dec.InputOffset())
	m.read = true
	if err := m.dec.Decode(v); err != nil {
		return 0, 0, err
	}
	start = skipWS(m.b, afterKey) + 1
	return skipWS(m.b, start), int(m.dec.InputOffset()), nil
}

func refMembers(b []byte, f func(m *refField) error) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil {
		return 0, err
	} else if t != json.Delim('{') {
		return 0, errNotObject
	}
	open := int(dec.InputOffset())
	for dec.More() {
		start := skipWS(b, int(dec.InputOffset()))
		if start < len(b) && b[start] == ',' {
			start = skipWS(b, start+1)
		}
		t, err := dec.Token()
		if err != nil {
			return 0, err
		}
		key, _ := t.(string)
		m := refField{name: key, keyStart: start, b: b, dec: dec}
		if err := f(&m); err != nil {
			return 0, err
		}
		if !m.read {
			if _, _, err := m.decode(nil); err != nil {
				return 0, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return 0, err
	}
	if skipWS(b, int(dec.InputOffset())) != len(b) {
		return 0, errNotObject
	}
	return open, nil
}

func refWalkChunk(p []byte) (chunk, bool) {
	var c chunk
	nullIdx, nullKey, nullEnd, nullPrev, nextKey := -1, 0, 0, -1, -1
	prevEnd, idx := -1, 0
	_, err := refMembers(p, func(m *refField) error {
		if idx == nullIdx+1 && nullIdx >= 0 {
			nextKey = m.keyStart
		}
		var v any
		var raw json.RawMessage
		switch m.name {
		case "usage", "x_groq", "message", "response":
			v = &raw
		case "model":
			v = &c.model
		case "type":
			v = &c.typ
		}
		start, end, err := m.decode(v)
		switch {
		case err != nil:
			return err
		case m.name == "choices":
			c.choices = true
			c.choicesEmpty = p[start] == '[' && skipWS(p, start+1) == end-1
		case m.name == "usage":
			c.usages++
			c.usage = raw
			if raw[0] == 'n' {
				nullIdx, nullKey, nullEnd, nullPrev, nextKey = idx, m.keyStart, end, prevEnd, -1
			}
		case m.name == "x_groq":
			c.groq = raw
		case m.name == "message":
			c.message = raw
		case m.name == "response":
			c.response = raw
		}
		prevEnd = end
		idx++
		return nil
	})
	if err != nil {
		return c, false
	}
	if c.usageKind() == 'n' && c.usages == 1 {
		switch {
		case nullPrev >= 0:
			c.cut0, c.cut1 = nullPrev, nullEnd
		case nextKey >= 0:
			c.cut0, c.cut1 = nullKey, nextKey
		default:
			c.cut0, c.cut1 = nullKey, nullEnd
		}
	}
	return c, true
}

func refScanRequest(body []byte) reqScan {
	if !utf8.Valid(body) {
		return reqScan{info: RequestInfo{Problem: "request body is not valid UTF-8"}}
	}
	if !json.Valid(body) {
		return reqScan{info: RequestInfo{Problem: "request body is not valid JSON"}}
	}
	var r reqScan
	var models, streams, options int
	problem := func(format string, a ...any) {
		if r.info.Problem == "" {
			r.info.Problem = fmt.Sprintf(format, a...)
		}
	}
	open, err := refMembers(body, func(m *refField) error {
		var err error
		switch m.name {
		case "model":
			models++
			var v str
			r.modelVal, r.modelEnd, err = m.decode(&v)
			if r.info.Model = v.s; !v.ok {
				problem(`"model" is not a string`)
			}
		case "stream":
			streams++
			var k kind
			_, _, err = m.decode(&k)
			if r.info.Stream = k == 't'; k != 't' && k != 'f' && k != 'n' {
				problem(`"stream" is not a boolean`)
			}
		case "stream_options":
			options++
			r.optVal, r.optEnd, err = m.decode(&r.opt)
			switch r.opt {
			case '{':
				b := body[r.optVal:r.optEnd]
				r.optMembers, r.incs, r.info.IncludeUsage = 0, 0, false
				_, _ = refMembers(b, func(m *refField) error {
					r.optMembers++
					if m.name != "include_usage" {
						if foldsTo([]byte(m.name), "include_usage") != "" {
							problem("ambiguous key %q (keys are case-sensitive)", "stream_options."+m.name)
						}
						return nil
					}
					r.incs++
					var k kind
					start, end, err := m.decode(&k)
					r.incVal, r.incEnd = r.optVal+start, r.optVal+end
					r.info.IncludeUsage = k == 't'
					return err
				})
			case 'n':
				r.optMembers, r.incs, r.info.IncludeUsage = 0, 0, false
			default:
				problem(`"stream_options" is not an object`)
			}
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			var n json.Number
			if _, _, err = m.decode(&n); err != nil {
				err = nil
			} else if v, e := n.Int64(); e == nil && v > r.info.MaxTokens {
				r.info.MaxTokens = v
			}
		default:
			if k := foldsTo([]byte(m.name), "model", "stream", "stream_options"); k != "" {
				problem("ambiguous key %q (keys are case-sensitive)", m.name)
			}
		}
		return err
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

// FuzzWalk checks walkChunk and the request scan against the json.Decoder
// walk they replaced: the same validity, fields, offsets and problems. One
// difference is meant: the Decoder walk read each member's value with a
// fresh scanner, so it took a value nested 10,000 deep inside the object,
// which json.Valid and json.Unmarshal refuse (10,001 levels); walkChunk
// refuses it too now.
func FuzzWalk(f *testing.F) {
	for _, tc := range inspectTests {
		f.Add([]byte(tc.body))
	}
	for _, s := range []string{
		`{"usage":null}`, ` {"a":1 , "usage" : null } `, `{"usage":null,"b":"\"}"}`,
		`{"choices":[ ],"usage":{"prompt_tokens":1,"Completion_Tokens":2}}`,
		`{"mod\u0065l":"x\\","type":"message_start","message":{"model":"m","usage":{"input_tokens":3}}}`,
		`{"x_groq":{"usage":{"prompt_tokens":1}},"response":{"model":"r"},"max_tokens":"12","max_output_tokens":1e3}`,
		`{"a":[[[{"b":"\\\\\""}]]],"usage":null,"c":-0.5e-3,"d":true,"e":false}`,
		`{"model":"a"} x`, `{"model":"a"}}`, `[1]`, `"x"`, `{"a":01}`, `{"a":1.}`, `{"\u00e9":1}`,
		"{\"usage\":null,\"x\":\"\xff\"}", `{"stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":1}}`,
		`{"max_tokens":99999999999999999999,"max_completion_tokens":-1,"max_output_tokens":"7"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		got, gok := walkChunk(p)
		want, wok := refWalkChunk(p)
		if wok && !json.Valid(p) {
			want, wok = chunk{}, false
		}
		if gok != wok || gok && !sameChunk(got, want) {
			t.Fatalf("walkChunk(%q) = %+v, %v; the json.Decoder walk: %+v, %v", p, got, gok, want, wok)
		}
		if g, w := scanRequest(p), refScanRequest(p); g != w {
			t.Fatalf("scanRequest(%q) = %+v; the json.Decoder walk: %+v", p, g, w)
		}
	})
}

// sameChunk reports whether two walks found the same: the same members, cut
// and report.
func sameChunk(a, b chunk) bool {
	return a.usages == b.usages && bytes.Equal(a.usage, b.usage) && a.model == b.model && a.typ == b.typ &&
		bytes.Equal(a.groq, b.groq) && bytes.Equal(a.message, b.message) && bytes.Equal(a.response, b.response) &&
		a.choices == b.choices && a.choicesEmpty == b.choicesEmpty && a.cut0 == b.cut0 && a.cut1 == b.cut1 &&
		a.report() == b.report()
}

// FuzzUsageDecode checks the usage and envelope decoding without
// reflection against json.Unmarshal into the same types (whose
// UnmarshalJSON methods are encoding/json's reading).
func FuzzUsageDecode(f *testing.F) {
	for _, s := range []string{
		`{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`,
		`{"Prompt_Tokens":1,"PROMPT_TOKENS":null,"input_tokens":"7","output_tokens":1.5,"total_tokens":-1}`,
		`{"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":5,"REASONING_TOKENS":6}}`,
		`{"input_tokens_details":[],"output_tokens_details":{"reasoning_tokens":{}}, "cache_creation_input_tokens":9,"cache_read_input_tokens":10}`,
		"{\"\u212aey\":1,\"\u017ftream\":2,\"\u0130nput_tokens\":3,\"\\u0070rompt_tokens\":4,\"prompt_tokens\\u0000\":5}",
		`{"model":"m","usage":{"prompt_tokens":1},"MODEL":"n","Usage":null}`,
		`{"model":1,"usage":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) || len(b) == 0 || b[0] != '{' {
			return
		}
		var want, got wireUsage
		_ = json.Unmarshal(b, &want)
		got.decode(b)
		if got != want {
			t.Fatalf("decode(%q) = %+v, json.Unmarshal: %+v", b, got, want)
		}
		var wantE, gotE object[envelope]
		_ = wantE.UnmarshalJSON(b)
		gotE.decode(b)
		if gotE != wantE {
			t.Fatalf("envelope decode(%q) = %+v, json.Unmarshal: %+v", b, gotE, wantE)
		}
	})
}
