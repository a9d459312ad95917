package openai

import (
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is a small JSON scanner for the hot path. It never builds a tree:
// it finds the members of the one or two objects that matter, skips every
// other value while checking its grammar, and keeps a bit per open container
// instead of recursing, so hostile nesting costs neither stack nor heap.

// maxDepth is the deepest nesting accepted, the same as encoding/json's.
const maxDepth = 10000

// scanner walks one JSON text s.
type scanner struct {
	s []byte
	// loose skips string contents without checking escapes, control bytes or
	// UTF-8. The stream scanner uses it on upstream chunks, where only the
	// structure matters; requests are always checked in full.
	loose bool
	// kinds holds one bit per open container (1: object, 0: array). The first
	// 256 levels use small; deeper documents grow big, at most maxDepth bits.
	small [4]uint64
	big   []uint64
	kbuf  [64]byte // unescaped key, see keyBytes
}

func (sc *scanner) setKind(d int, obj bool) {
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

func (sc *scanner) isObj(d int) bool {
	w, bit := d>>6, uint64(1)<<uint(d&63)
	if w < len(sc.small) {
		return sc.small[w]&bit != 0
	}
	return sc.big[w-len(sc.small)]&bit != 0
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special is non-zero when any byte of w needs a closer look inside a JSON
// string: '"', '\\', a control byte (< 0x20) or a non-ASCII byte. The tests
// are the classic "has zero byte" and "has byte less than n" word tricks;
// they are exact as predicates over the whole word.
func special(w uint64) uint64 {
	q := w ^ (lsb * '"')
	b := w ^ (lsb * '\\')
	return w&msb | (q-lsb)&^q&msb | (b-lsb)&^b&msb | (w-lsb*0x20)&^w&msb
}

// str returns the index just after the string whose opening quote is at
// s[i-1], and whether it contains a backslash escape. It returns -1 when the
// string is unterminated or, unless loose, not valid JSON (a control byte, a
// bad escape, invalid UTF-8).
func (sc *scanner) str(i int) (int, bool) {
	s := sc.s
	if sc.loose {
		return looseStr(s, i)
	}
	esc := false
	for {
		for i+8 <= len(s) && special(binary.LittleEndian.Uint64(s[i:])) == 0 {
			i += 8
		}
		// Handle the word holding the special byte one byte at a time, then
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
				n := escLen(s, i)
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

// looseStr finds the closing quote of a string without checking its
// contents, eight bytes at a time.
func looseStr(s []byte, i int) (int, bool) {
	esc := false
	for i < len(s) {
		for i+8 <= len(s) {
			w := binary.LittleEndian.Uint64(s[i:])
			q := w ^ (lsb * '"')
			b := w ^ (lsb * '\\')
			if (q-lsb)&^q&msb|(b-lsb)&^b&msb != 0 {
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

// escLen returns the length of the valid escape sequence at s[i] ('\\'), or 0.
func escLen(s []byte, i int) int {
	if i+1 >= len(s) {
		return 0
	}
	switch s[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if _, ok := hex4(s, i+2); ok {
			return 6
		}
	}
	return 0
}

func hex4(s []byte, i int) (rune, bool) {
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

// unescape appends the decoded contents of a JSON string (without its
// quotes) to dst, as encoding/json decodes it: a lone or mismatched UTF-16
// surrogate becomes U+FFFD.
func unescape(dst, src []byte) ([]byte, bool) {
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
			r, ok := hex4(src, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+1 < len(src) && src[i] == '\\' && src[i+1] == 'u' {
					r2, ok = hex4(src, i+2)
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

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number returns the index after the JSON number at s[i], or -1.
func number(s []byte, i int) int {
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i >= len(s):
		return -1
	case s[i] == '0':
		i++
	case '1' <= s[i] && s[i] <= '9':
		for i++; i < len(s) && isDigit(s[i]); i++ {
		}
	default:
		return -1
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return -1
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			return -1
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i
}

func literal(s []byte, i int, lit string) int {
	if len(s)-i >= len(lit) && string(s[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// key checks `"name" :` starting at s[i] (after optional white space) and
// returns the index after the colon, or -1.
func (sc *scanner) key(i int) int {
	s := sc.s
	i = skipWS(s, i)
	if i >= len(s) || s[i] != '"' {
		return -1
	}
	i, _ = sc.str(i + 1)
	if i < 0 {
		return -1
	}
	i = skipWS(s, i)
	if i >= len(s) || s[i] != ':' {
		return -1
	}
	return i + 1
}

// value checks the JSON value at s[i] (after optional white space), nested
// inside d containers, and returns the index just after it, or -1.
func (sc *scanner) value(i, d int) int {
	s := sc.s
	base := d
	for {
		i = skipWS(s, i)
		if i >= len(s) {
			return -1
		}
		switch c := s[i]; c {
		case '{', '[':
			d++
			if d > maxDepth {
				return -1
			}
			sc.setKind(d, c == '{')
			i = skipWS(s, i+1)
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
			i = literal(s, i, "true")
		case 'f':
			i = literal(s, i, "false")
		case 'n':
			i = literal(s, i, "null")
		default:
			i = number(s, i)
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
			i = skipWS(s, i)
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

// member is one "key": value pair of an object being read.
type member struct {
	key, keyEnd int // the key's opening quote and the index after its closing one
	esc         bool
	val         int // the first byte of the value
}

// objReader reads the members of one object. After next returns a member,
// the caller moves past its value with skip, or sets i itself.
type objReader struct {
	sc  *scanner
	i   int // where the next member (or the closing brace) is looked for
	d   int // the object's depth
	n   int // members read
	end int // after the closing brace once next returned false; -1 on a syntax error
}

// object starts reading the object whose '{' is at s[i], at depth d.
func (sc *scanner) object(i, d int) objReader {
	if d > maxDepth {
		return objReader{sc: sc, i: -1, d: d}
	}
	return objReader{sc: sc, i: i + 1, d: d}
}

func (o *objReader) fail() (member, bool) {
	o.i, o.end = -1, -1
	return member{}, false
}

func (o *objReader) next() (member, bool) {
	if o.i < 0 {
		return o.fail()
	}
	s := o.sc.s
	i := skipWS(s, o.i)
	if i >= len(s) {
		return o.fail()
	}
	if s[i] == '}' {
		o.end = i + 1
		return member{}, false
	}
	if o.n > 0 {
		if s[i] != ',' {
			return o.fail()
		}
		i = skipWS(s, i+1)
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
	m := member{key: i, keyEnd: e, esc: esc}
	i = skipWS(s, e)
	if i >= len(s) || s[i] != ':' {
		return o.fail()
	}
	m.val = skipWS(s, i+1)
	if m.val >= len(s) {
		return o.fail()
	}
	o.n++
	o.i = m.val
	return m, true
}

// skip moves past the value of m and returns the index after it, or -1.
func (o *objReader) skip(m member) int {
	o.i = o.sc.value(m.val, o.d)
	return o.i
}

// keyBytes returns the key of m, unescaped. The result may alias the scanner's
// buffer and is valid until the next call. A key too long to unescape there
// comes back empty, which matches nothing the callers look for.
func (sc *scanner) keyBytes(m member) []byte {
	raw := sc.s[m.key+1 : m.keyEnd-1]
	if !m.esc {
		return raw
	}
	if len(raw) > 6*len(sc.kbuf)/2 {
		return nil
	}
	k, ok := unescape(sc.kbuf[:0], raw)
	if !ok || len(k) > len(sc.kbuf) {
		return nil
	}
	return k
}

// stringAt decodes the string value at s[i] ('"') and returns it with the
// index after it; -1 when it is not a valid string.
func (sc *scanner) stringAt(i int) (string, int) {
	e, esc := sc.str(i + 1)
	if e < 0 {
		return "", -1
	}
	raw := sc.s[i+1 : e-1]
	if !esc {
		return string(raw), e
	}
	d, ok := unescape(make([]byte, 0, len(raw)), raw)
	if !ok {
		return "", -1
	}
	return string(d), e
}
