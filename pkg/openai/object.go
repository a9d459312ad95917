package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

var (
	errNotObject = errors.New("not a JSON object")
	errInvalid   = errors.New("not valid JSON")
)

// field is one top-level "key": value pair met by members.
type field struct {
	key        []byte // as encoding/json decodes it: the raw key unless it has escapes or invalid UTF-8
	keyStart   int    // where the key's opening quote is
	start, end int    // where the value is
	b          []byte
}

// name is the key as a string (for messages).
func (m *field) name() string { return string(m.key) }

// value returns the field's value, as encoding/json hands it to an
// Unmarshaler.
func (m *field) value() []byte { return m.b[m.start:m.end] }

// members calls f for each top-level field of the JSON object b, in order.
// It returns the index just after the object's '{', and an error when b is
// not one JSON object (white space around it aside) or f returned one.
//
// b is checked with json.Valid, which allocates nothing and accepts exactly
// what encoding/json decodes; the walk that follows then only has to find
// where keys and values end.
func members(b []byte, f func(m field) error) (int, error) {
	if !json.Valid(b) {
		return 0, errInvalid
	}
	i := skipWS(b, 0)
	if b[i] != '{' {
		return 0, errNotObject
	}
	return i + 1, validMembers(b, i, f)
}

// validMembers is members over the object at b[open], which json.Valid has
// checked.
func validMembers(b []byte, open int, f func(m field) error) error {
	i := skipWS(b, open+1)
	if b[i] == '}' {
		return nil
	}
	for {
		ke := skipString(b, i)
		m := field{key: b[i+1 : ke-1], keyStart: i, b: b}
		if !plainString(m.key) {
			var k string
			_ = json.Unmarshal(b[i:ke], &k) // valid: it cannot fail
			m.key = []byte(k)
		}
		m.start = skipWS(b, skipWS(b, ke)+1) // past the colon
		m.end = skipValue(b, m.start)
		if err := f(m); err != nil {
			return err
		}
		i = skipWS(b, m.end)
		if b[i] == '}' {
			return nil
		}
		i = skipWS(b, i+1) // past the comma
	}
}

// plainString reports whether the inside of a valid JSON string decodes to
// itself: no escapes, valid UTF-8.
func plainString(s []byte) bool {
	return bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s)
}

// skipString returns the index after the valid JSON string at b[i].
func skipString(b []byte, i int) int {
	for i++; ; {
		i += bytes.IndexByte(b[i:], '"')
		k := i
		for b[k-1] == '\\' { // the opening quote stops this
			k--
		}
		if (i-k)%2 == 0 { // not escaped
			return i + 1
		}
		i++
	}
}

// skipValue returns the index after the valid JSON value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	// A number or a literal: it ends where the object or array does, at
	// a comma, or at white space.
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// kind is the first byte of a JSON value: '{', '[', '"', 't', 'f', 'n', or
// that of a number.
type kind byte

func (k *kind) UnmarshalJSON(b []byte) error {
	*k = kind(b[0])
	return nil
}

// str is a JSON value kept when it is a string.
type str struct {
	s  string
	ok bool
}

func (v *str) UnmarshalJSON(b []byte) error {
	*v = str{}
	switch {
	case b[0] != '"':
	case plainString(b[1 : len(b)-1]):
		v.s, v.ok = string(b[1:len(b)-1]), true
	default:
		v.ok = json.Unmarshal(b, &v.s) == nil
	}
	return nil
}

func skipWS(s []byte, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// literal returns the index after lit at s[i], or -1 when it is not there.
func literal(s []byte, i int, lit string) int {
	if len(s)-i >= len(lit) && string(s[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}
