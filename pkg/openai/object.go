package openai

import (
	"bytes"
	"encoding/json"
	"errors"
)

var errNotObject = errors.New("not a JSON object")

// field is one top-level "key": value pair met by members.
type field struct {
	name     string // decoded, as encoding/json decodes it
	keyStart int    // where the key's opening quote is
	b        []byte
	dec      *json.Decoder
	read     bool
}

// decode reads the field's value into v (nil: into skip) and returns where
// the value starts and ends in the object's bytes.
func (m *field) decode(v any) (start, end int, err error) {
	if v == nil {
		v = &skip{}
	}
	afterKey := int(m.dec.InputOffset())
	m.read = true
	if err := m.dec.Decode(v); err != nil {
		return 0, 0, err
	}
	start = skipWS(m.b, afterKey) + 1 // past the colon
	return skipWS(m.b, start), int(m.dec.InputOffset()), nil
}

// members calls f for each top-level field of the JSON object b, in order.
// f may decode the field's value once; a value it leaves is skipped. It
// returns the index just after the object's '{', and an error when b is not
// one JSON object (white space around it aside) or f returned one.
func members(b []byte, f func(m *field) error) (int, error) {
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
		key, _ := t.(string) // the decoder allows nothing else here
		m := field{name: key, keyStart: start, b: b, dec: dec}
		if err := f(&m); err != nil {
			return 0, err
		}
		if !m.read {
			if _, _, err := m.decode(nil); err != nil {
				return 0, err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return 0, err
	}
	if skipWS(b, int(dec.InputOffset())) != len(b) {
		return 0, errNotObject
	}
	return open, nil
}

// skip is a value decoded for nothing. The decoder hands UnmarshalJSON a
// slice of its own buffer, so skipping copies nothing more.
type skip struct{}

func (*skip) UnmarshalJSON([]byte) error { return nil }

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
	if b[0] == '"' {
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
