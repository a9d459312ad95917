package openai

// The old hand-written old_scanner, kept only as a differential oracle while encoding/json replaces it.

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is a small JSON old_scanner for the hot path. It never builds a tree:
// it finds the members of the one or two objects that matter, skips every
// other value while checking its grammar, and keeps a bit per open container
// instead of recursing, so hostile nesting costs neither stack nor heap.

// old_maxDepth is the deepest nesting accepted, the same as encoding/json's.
const old_maxDepth = 10000

// old_scanner walks one JSON text s.
type old_scanner struct {
	s []byte
	// loose skips string contents without checking escapes, control bytes or
	// UTF-8. The stream old_scanner uses it on upstream chunks, where only the
	// structure matters; requests are always checked in full.
	loose bool
	// kinds holds one bit per open container (1: object, 0: array). The first
	// 256 levels use small; deeper documents grow big, at most old_maxDepth bits.
	small [4]uint64
	big   []uint64
	kbuf  [64]byte // unescaped key, see keyBytes
}

func (sc *old_scanner) setKind(d int, obj bool) {
	w, bit := d>>6, uint64(1)<<uint(d&63)
	var p *uint64
	if w < len(sc.small) {
		p = &sc.small[w]
	} else {
		w -= len(sc.small)
		for len(sc.big) <= w {
			sc.big = append(sc.big, 0)
		}
		p = &sc.big[w]
	}
	if obj {
		*p |= bit
	} else {
		*p &^= bit
	}
}

func (sc *old_scanner) isObj(d int) bool {
	w, bit := d>>6, uint64(1)<<uint(d&63)
	if w < len(sc.small) {
		return sc.small[w]&bit != 0
	}
	return sc.big[w-len(sc.small)]&bit != 0
}

func old_skipWS(s []byte, i int) int {
	for i < len(s) {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

const (
	old_lsb = 0x0101010101010101
	old_msb = 0x8080808080808080
)

// old_special is non-zero when any byte of w needs a closer look inside a JSON
// string: '"', '\\', a control byte (< 0x20) or a non-ASCII byte. The tests
// are the classic "has zero byte" and "has byte less than n" word tricks;
// they are exact as predicates over the whole word.
func old_special(w uint64) uint64 {
	q := w ^ (old_lsb * '"')
	b := w ^ (old_lsb * '\\')
	return w&old_msb | (q-old_lsb)&^q&old_msb | (b-old_lsb)&^b&old_msb | (w-old_lsb*0x20)&^w&old_msb
}

// str returns the index just after the string whose opening quote is at
// s[i-1], and whether it contains a backslash escape. It returns -1 when the
// string is unterminated or, unless loose, not valid JSON (a control byte, a
// bad escape, invalid UTF-8).
func (sc *old_scanner) str(i int) (int, bool) {
	s := sc.s
	if sc.loose {
		return old_looseStr(s, i)
	}
	esc := false
	for {
		for i+8 <= len(s) && old_special(binary.LittleEndian.Uint64(s[i:])) == 0 {
			i += 8
		}
		// Handle the word holding the old_special byte one byte at a time, then
		// go back to the fast loop.
		for stop := i + 8; i < stop; {
			if i >= len(s) {
				return -1, esc
			}
			c := s[i]
			switch {
			case c == '"':
				return i + 1, esc
			case c == '\\':
				n := old_escLen(s, i)
				if n == 0 {
					return -1, esc
				}
				esc = true
				i += n
			case c < 0x20:
				return -1, esc
			case c < utf8.RuneSelf:
				i++
			default:
				r, size := utf8.DecodeRune(s[i:])
				if r == utf8.RuneError && size == 1 {
					return -1, esc
				}
				i += size
			}
		}
	}
}

// old_looseStr finds the closing quote of a string without checking its
// contents, eight bytes at a time.
func old_looseStr(s []byte, i int) (int, bool) {
	esc := false
	for i < len(s) {
		for i+8 <= len(s) {
			w := binary.LittleEndian.Uint64(s[i:])
			q := w ^ (old_lsb * '"')
			b := w ^ (old_lsb * '\\')
			if (q-old_lsb)&^q&old_msb|(b-old_lsb)&^b&old_msb != 0 {
				break
			}
			i += 8
		}
		for stop := min(i+8, len(s)); i < stop; i++ {
			switch s[i] {
			case '"':
				return i + 1, esc
			case '\\':
				esc = true
				i++
			}
		}
	}
	return -1, esc
}

// old_escLen returns the length of the valid escape sequence at s[i] ('\\'), or 0.
func old_escLen(s []byte, i int) int {
	if i+1 >= len(s) {
		return 0
	}
	switch s[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if _, ok := old_hex4(s, i+2); ok {
			return 6
		}
	}
	return 0
}

func old_hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// old_unescape appends the decoded contents of a JSON string (without its
// quotes) to dst, as encoding/json decodes it: a lone or mismatched UTF-16
// surrogate becomes U+FFFD.
func old_unescape(dst, src []byte) ([]byte, bool) {
	for i := 0; i < len(src); {
		c := src[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(src) {
			return dst, false
		}
		switch e := src[i+1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := old_hex4(src, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+1 < len(src) && src[i] == '\\' && src[i+1] == 'u' {
					r2, ok = old_hex4(src, i+2)
				}
				if d := utf16.DecodeRune(r, r2); ok && d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
}

func old_isDigit(c byte) bool { return '0' <= c && c <= '9' }

// old_number returns the index after the JSON old_number at s[i], or -1.
func old_number(s []byte, i int) int {
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i >= len(s):
		return -1
	case s[i] == '0':
		i++
	case '1' <= s[i] && s[i] <= '9':
		for i++; i < len(s) && old_isDigit(s[i]); i++ {
		}
	default:
		return -1
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !old_isDigit(s[i]) {
			return -1
		}
		for i < len(s) && old_isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !old_isDigit(s[i]) {
			return -1
		}
		for i < len(s) && old_isDigit(s[i]) {
			i++
		}
	}
	return i
}

func old_literal(s []byte, i int, lit string) int {
	if len(s)-i >= len(lit) && string(s[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// key checks `"name" :` starting at s[i] (after optional white space) and
// returns the index after the colon, or -1.
func (sc *old_scanner) key(i int) int {
	s := sc.s
	i = old_skipWS(s, i)
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	i, _ = sc.str(i + 1)
	if i < 0 {
		return -1
	}
	i = old_skipWS(s, i)
	if i >= len(s) || s[i] != ':' {
		return -1
	}
	return i + 1
}

// value checks the JSON value at s[i] (after optional white space), nested
// inside d containers, and returns the index just after it, or -1.
func (sc *old_scanner) value(i, d int) int {
	s := sc.s
	base := d
	for {
		i = old_skipWS(s, i)
		if i >= len(s) {
			return -1
		}
		switch c := s[i]; c {
		case '{', '[':
			d++
			if d > old_maxDepth {
				return -1
			}
			sc.setKind(d, c == '{')
			i = old_skipWS(s, i+1)
			if i < len(s) && s[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				d--
				i++
				break
			}
			if c == '{' {
				if i = sc.key(i); i < 0 {
					return -1
				}
			}
			continue
		case '"':
			i, _ = sc.str(i + 1)
		case 't':
			i = old_literal(s, i, "true")
		case 'f':
			i = old_literal(s, i, "false")
		case 'n':
			i = old_literal(s, i, "null")
		default:
			i = old_number(s, i)
		}
		if i < 0 {
			return -1
		}
		// After a value: close containers until one continues with a comma.
	after:
		for {
			if d == base {
				return i
			}
			i = old_skipWS(s, i)
			if i >= len(s) {
				return -1
			}
			obj := sc.isObj(d)
			switch s[i] {
			case ',':
				i++
				if obj {
					if i = sc.key(i); i < 0 {
						return -1
					}
				}
				break after
			case '}':
				if !obj {
					return -1
				}
			case ']':
				if obj {
					return -1
				}
			default:
				return -1
			}
			d--
			i++
		}
	}
}

// old_member is one "key": value pair of an object being read.
type old_member struct {
	key, keyEnd int // the key's opening quote and the index after its closing one
	esc         bool
	val         int // the first byte of the value
}

// old_objReader reads the members of one object. After next returns a old_member,
// the caller moves past its value with skip, or sets i itself.
type old_objReader struct {
	sc  *old_scanner
	i   int // where the next old_member (or the closing brace) is looked for
	d   int // the object's depth
	n   int // members read
	end int // after the closing brace once next returned false; -1 on a syntax error
}

// object starts reading the object whose '{' is at s[i], at depth d.
func (sc *old_scanner) object(i, d int) old_objReader {
	if d > old_maxDepth {
		return old_objReader{sc: sc, i: -1, d: d}
	}
	return old_objReader{sc: sc, i: i + 1, d: d}
}

func (o *old_objReader) fail() (old_member, bool) {
	o.i, o.end = -1, -1
	return old_member{}, false
}

func (o *old_objReader) next() (old_member, bool) {
	if o.i < 0 {
		return o.fail()
	}
	s := o.sc.s
	i := old_skipWS(s, o.i)
	if i >= len(s) {
		return o.fail()
	}
	if s[i] == '}' {
		o.end = i + 1
		return old_member{}, false
	}
	if o.n > 0 {
		if s[i] != ',' {
			return o.fail()
		}
		i = old_skipWS(s, i+1)
		if i >= len(s) {
			return o.fail()
		}
	}
	if s[i] != '"' {
		return o.fail()
	}
	e, esc := o.sc.str(i + 1)
	if e < 0 {
		return o.fail()
	}
	m := old_member{key: i, keyEnd: e, esc: esc}
	i = old_skipWS(s, e)
	if i >= len(s) || s[i] != ':' {
		return o.fail()
	}
	m.val = old_skipWS(s, i+1)
	if m.val >= len(s) {
		return o.fail()
	}
	o.n++
	o.i = m.val
	return m, true
}

// skip moves past the value of m and returns the index after it, or -1.
func (o *old_objReader) skip(m old_member) int {
	o.i = o.sc.value(m.val, o.d)
	return o.i
}

// keyBytes returns the key of m, unescaped. The result may alias the old_scanner's
// buffer and is valid until the next call. A key too long to old_unescape there
// comes back empty, which matches nothing the callers look for.
func (sc *old_scanner) keyBytes(m old_member) []byte {
	raw := sc.s[m.key+1 : m.keyEnd-1]
	if !m.esc {
		return raw
	}
	if len(raw) > 6*len(sc.kbuf)/2 {
		return nil
	}
	k, ok := old_unescape(sc.kbuf[:0], raw)
	if !ok || len(k) > len(sc.kbuf) {
		return nil
	}
	return k
}

// stringAt decodes the string value at s[i] ('"') and returns it with the
// index after it; -1 when it is not a valid string.
func (sc *old_scanner) stringAt(i int) (string, int) {
	e, esc := sc.str(i + 1)
	if e < 0 {
		return "", -1
	}
	raw := sc.s[i+1 : e-1]
	if !esc {
		return string(raw), e
	}
	d, ok := old_unescape(make([]byte, 0, len(raw)), raw)
	if !ok {
		return "", -1
	}
	return string(d), e
}

// old_RequestInfo is what the proxy needs to know about a request body.
type old_RequestInfo struct {
	Model        string // top-level "model" when it is a string
	Stream       bool   // top-level "stream" is true
	IncludeUsage bool   // "stream_options" is an object whose "include_usage" is true
	// Valid reports whether the body is one JSON object in valid UTF-8,
	// nested at most 10000 deep. When it is false the other fields are zero.
	Valid bool
}

// old_reqScan is old_InspectRequest's result plus where the members that
// old_InjectIncludeUsage edits are.
type old_reqScan struct {
	info    old_RequestInfo
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

// old_InspectRequest reads the top-level "model", "stream" and
// "stream_options.include_usage" of a JSON request body. A repeated key counts
// by its last occurrence, as in encoding/json and JavaScript; "stream" counts
// only when it is the old_literal true. The whole body is checked, in one pass
// with no recursion and no allocation besides the model string; string
// contents (a base64 image, say) are skipped eight bytes at a time.
func old_InspectRequest(body []byte) old_RequestInfo {
	r := old_scanRequest(body)
	return r.info
}

func old_scanRequest(body []byte) old_reqScan {
	var r old_reqScan
	if !r.scan(body) {
		return old_reqScan{}
	}
	r.info.Valid = true
	return r
}

func (r *old_reqScan) scan(body []byte) bool {
	sc := old_scanner{s: body}
	i := old_skipWS(body, 0)
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
	return o.end >= 0 && old_skipWS(body, o.end) == len(body)
}

// streamOptions reads the stream_options object at s[i].
func (r *old_reqScan) streamOptions(sc *old_scanner, i int) int {
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

// old_InjectIncludeUsage asks the upstream for a usage chunk: for a streamed
// request whose client did not ask for usage, it returns a copy of body with
// "stream_options":{"include_usage":true} added and true. Every other byte is
// kept: the old_member goes right after the opening brace; an existing
// stream_options object gets "include_usage":true as its first old_member, or its
// include_usage value replaced by true; "stream_options":null becomes the
// object.
//
// It returns body and false when there is nothing to do (not a stream, usage
// already asked for) or when it cannot be done safely: a body old_InspectRequest
// finds invalid, a repeated "stream", "stream_options" or "include_usage" key
// (parsers disagree on which one counts), or a stream_options that is neither
// an object nor null. The caller strips the usage chunk from the response
// (NewStreamScanner with strip) exactly when ok is true.
//
// Only chat completions (and legacy completions) accept stream_options; the
// caller decides by path.
func old_InjectIncludeUsage(body []byte) ([]byte, bool) {
	r := old_scanRequest(body)
	if !r.info.Valid || !r.info.Stream || r.info.IncludeUsage || r.streams != 1 || r.options > 1 || r.incs > 1 {
		return body, false
	}
	switch {
	case r.options == 0:
		return old_splice(body, r.obj+1, r.obj+1, `"stream_options":{"include_usage":true},`), true
	case body[r.optVal] == 'n':
		return old_splice(body, r.optVal, r.optEnd, `{"include_usage":true}`), true
	case body[r.optVal] == '{' && r.incs == 0:
		ins := `"include_usage":true`
		if r.optMembers > 0 {
			ins += ","
		}
		return old_splice(body, r.optVal+1, r.optVal+1, ins), true
	case body[r.optVal] == '{':
		return old_splice(body, r.incVal, r.incEnd, "true"), true
	}
	return body, false
}

// old_splice returns a new slice: s with s[i:j] replaced by ins.
func old_splice(s []byte, i, j int, ins string) []byte {
	out := make([]byte, 0, len(s)-(j-i)+len(ins))
	out = append(out, s[:i]...)
	out = append(out, ins...)
	return append(out, s[j:]...)
}

// FuzzOldScanner checks the encoding/json InspectRequest and
// InjectIncludeUsage against the hand-written scanner they replace.
func FuzzOldScanner(f *testing.F) {
	for _, tc := range inspectTests {
		f.Add([]byte(tc.body))
	}
	for _, s := range []string{
		`{"model":"m","stream":true}`,
		` { "stream" : true , "stream_options" : { } } `,
		`{"stream":true,"stream_options":{"a":[1,{"b":null}],"include_usage":false}}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":{ "include_usage" : null }}`,
		`{"str\u0065am":true,"stream_\u006fptions":{"include_\u0075sage":0}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, old := InspectRequest(body), old_InspectRequest(body)
		deep := strings.Count(string(body), "[")+strings.Count(string(body), "{") > 9000
		if got.Valid != old.Valid && !deep {
			t.Fatalf("InspectRequest(%q).Valid = %v, old scanner %v", body, got.Valid, old.Valid)
		}
		if got.Valid != (got.Problem == "") && got.Problem == "" {
			t.Fatalf("InspectRequest(%q) = %+v: invalid without a problem", body, got)
		}
		if got.Problem == "" && (got.Model != old.Model || got.Stream != old.Stream || got.IncludeUsage != old.IncludeUsage) {
			t.Fatalf("InspectRequest(%q) = %+v, old scanner %+v", body, got, old)
		}
		out, ok := InjectIncludeUsage(body)
		oout, ook := old_InjectIncludeUsage(body)
		if ok && (!ook || !bytes.Equal(out, oout)) {
			t.Fatalf("InjectIncludeUsage(%q) = %q, %v; old scanner %q, %v", body, out, ok, oout, ook)
		}
		if ook && !ok && got.Problem == "" {
			t.Fatalf("InjectIncludeUsage(%q) refused, old scanner %q", body, oout)
		}
	})
}
