// Package scrub masks secrets (provider keys) in data on its way to a client:
// a response body as it streams, header values, strings.
//
// A secret is masked where it occurs by a string of the same length that
// keeps its first 3 and last 4 bytes and has '*' in between, the form keys
// take in aiproxy's listings. Secrets shorter than 8 bytes are ignored: their
// mask would hide nothing.
package scrub

import (
	"bytes"
	"io"
	"net/http"
	"strings"
)

const minLen = 8

// prepare returns the secrets worth masking, as byte slices.
func prepare(secrets []string) [][]byte {
	var out [][]byte
	for _, s := range secrets {
		if len(s) >= minLen {
			out = append(out, []byte(s))
		}
	}
	return out
}

// span is a range of bytes to mask: the middle of an occurrence of a secret.
type span struct{ from, to int }

// find appends to spans the middle of every occurrence of every secret in b,
// overlapping ones included. It only reads b.
func find(spans []span, b []byte, secrets [][]byte) []span {
	for _, s := range secrets {
		for i := 0; ; i++ {
			j := bytes.Index(b[i:], s)
			if j < 0 {
				break
			}
			i += j
			spans = append(spans, span{i + 3, i + len(s) - 4})
		}
	}
	return spans
}

// apply masks the parts of spans that fall in b, and appends to rest those
// that go on past it, shifted to start at len(b).
func apply(b []byte, spans, rest []span) []span {
	for _, sp := range spans {
		for k := max(sp.from, 0); k < min(sp.to, len(b)); k++ {
			b[k] = '*'
		}
		if sp.to > len(b) {
			rest = append(rest, span{max(sp.from-len(b), 0), sp.to - len(b)})
		}
	}
	return rest
}

// partial returns the length of the longest suffix of b that is a proper
// prefix of a secret: the start of an occurrence that may end in data not
// read yet.
func partial(b []byte, secrets [][]byte) int {
	n := 0
	for _, s := range secrets {
		// Only a suffix longer than n can matter.
		for j := max(len(b)-len(s)+1, 0); j < len(b)-n; j++ {
			if b[j] == s[0] && bytes.HasPrefix(s, b[j:]) {
				n = len(b) - j
				break
			}
		}
	}
	return n
}

// String returns s with every secret masked.
func String(s string, secrets ...string) string {
	if !containsAny(s, secrets) {
		return s // the usual case, without allocating
	}
	spans := find(nil, []byte(s), prepare(secrets))
	if len(spans) == 0 {
		return s
	}
	b := []byte(s)
	apply(b, spans, nil)
	return string(b)
}

// containsAny reports whether s holds a secret long enough to mask.
func containsAny(s string, secrets []string) bool {
	for _, sec := range secrets {
		if len(sec) >= minLen && strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// Header masks every secret in every value of h, in place.
func Header(h http.Header, secrets ...string) {
	for _, vs := range h {
		for i, v := range vs {
			vs[i] = String(v, secrets...)
		}
	}
}

// NewReader returns a reader of what r reads with every secret masked,
// wherever the reads of r cut it. Each Read returns all that r has given,
// except a trailing part that may be the start of a secret (at most the
// longest secret's length less one byte), held until the next read of r
// settles it or r ends; nothing else is held back. It reads into the
// caller's p and masks there, so that an open stream holds no buffer of
// its own beyond the bytes held.
func NewReader(r io.Reader, secrets ...string) io.Reader {
	m := &reader{r: r, secrets: prepare(secrets)}
	if len(m.secrets) == 0 {
		return r
	}
	for _, s := range m.secrets {
		m.longest = max(m.longest, len(s))
	}
	return m
}

type reader struct {
	r       io.Reader
	secrets [][]byte
	longest int
	// held is the unmasked end of the last read, held back, with carry
	// the masks of earlier occurrences that reach into it. A p too short
	// to take held and more is read through small, and out is what of it
	// is masked and not yet returned.
	held, small, out []byte
	carry, spans     []span
	err              error
}

func (m *reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(m.out) > 0 {
			n := copy(p, m.out)
			m.out = m.out[n:]
			return n, nil
		}
		if m.err != nil {
			return 0, m.err
		}
		buf := p
		if len(p) <= len(m.held) {
			if m.small == nil {
				m.small = make([]byte, 2*m.longest)
			}
			buf = m.small
		}
		// The held bytes go first, and the read after them.
		h := copy(buf, m.held)
		n, err := m.r.Read(buf[h:])
		b := buf[:h+n]
		m.spans = find(append(m.spans[:0], m.carry...), b, m.secrets)
		ready := len(b)
		if m.err = err; err == nil {
			ready -= partial(b, m.secrets)
		}
		m.carry = apply(b[:ready], m.spans, m.carry[:0])
		m.held = append(m.held[:0], b[ready:]...)
		switch {
		case n == 0 && (err == nil || h == 0):
			return 0, err
		case ready == 0:
		case len(buf) > 0 && &buf[0] == &p[0]:
			return ready, nil
		default:
			m.out = b[:ready]
		}
	}
}
