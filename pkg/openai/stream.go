package openai

import (
	"bytes"
	"io"
)

const (
	// maxLine is the longest line the scanners read for usage. A longer line
	// passes through unread: no usage is taken from it and nothing is
	// stripped from it. It also bounds the side buffer.
	maxLine = 1 << 20
	// stripBufSize is the read buffer a stripping scanner starts with, and
	// shrinks back to after a long line: enough for a usual chunk of a few
	// hundred bytes and its held-back line. It grows, doubling, only to hold
	// one unfinished line of up to maxLine bytes.
	stripBufSize = 1 << 10
	// minRead is the least room a stripping scanner reads into.
	minRead = 512
	// keepBuf is the largest buffer kept once the line that needed it is done.
	keepBuf = 64 << 10
	// modelTries is how many chunks are read in full for the model; an
	// upstream that names none costs no more after that.
	modelTries = 8
)

var usageKey = []byte(`"usage"`)

// StreamScanner passes an upstream text/event-stream body through and reads
// its data: lines on the side for the last usage object and the model.
//
// Without strip, Read returns exactly the upstream's bytes as they arrive; the
// only copy is of an unfinished line, at most 1 MiB, kept until its end
// arrives so that it can be read. A longer line is not read for usage.
//
// With strip (aiproxy added stream_options.include_usage; the client did not
// ask for it), Read returns the upstream's bytes minus what the injection
// added: a usage-only chunk (top-level "choices":[] and a "usage" object) is
// removed with the blank line that ends its event, unless an earlier line of
// that event was already passed on; a top-level "usage":null member is removed
// with its comma. An unfinished line is held until its end arrives (or until
// it exceeds 1 MiB; it then passes unread); everything else is returned as
// soon as it is read. A usage object on a chunk that has choices is left
// alone: some upstreams send it whether asked or not.
//
// Lines may end in "\n", "\r\n" or "\r", split anywhere between reads. An
// unfinished last line is passed on unchanged when the upstream ends. Event
// fields other than data (event:, id:, comments) pass untouched; each data:
// line is read on its own, so a JSON object split over several data: lines
// of one event is not read.
//
// A StreamScanner is not safe for concurrent use: call Usage and Done from
// the goroutine that reads, once Read has returned an error, or after the
// caller stopped reading.
type StreamScanner struct {
	r     io.ReadCloser
	strip bool
	max   int // maxLine; tests lower it

	long    bool // the current line is longer than max: pass it on unread
	afterCR bool // the last byte read ended a line with "\r": a "\n" next belongs to it
	crDrop  bool // and that line was removed: remove the "\n" too

	// Without strip: the start of an unfinished line.
	part []byte

	// With strip: buf[o0:o1] is output not yet returned; buf[h0:h1] is the
	// unfinished line held back.
	buf            []byte
	o0, o1, h0, h1 int
	emitted        bool // a line of the current event was passed on
	dropped        bool // a usage-only line of the current event was removed

	err  error // the upstream's last error, returned after the output
	done bool  // the upstream ended with io.EOF

	tries     int       // data lines read for the model while it was unknown
	last      tokens    // the last usage object with a known count
	groq      tokens    // the last x_groq.usage, used when there is no usage object
	anthropic anthropic // Anthropic's message_start usage, updated by message_delta
	isAnth    bool      // and there was one: it wins
	model     string
}

// NewStreamScanner returns a StreamScanner reading r. With strip it removes
// the usage chunk and "usage":null members that an injected
// stream_options.include_usage makes the upstream add; pass strip exactly
// when InjectIncludeUsage returned true.
func NewStreamScanner(r io.ReadCloser, strip bool) *StreamScanner {
	return &StreamScanner{r: r, strip: strip, max: maxLine}
}

// Usage returns the last usage object seen so far (a Chat Completions chunk's
// "usage", or the "response.usage" of a Responses API event such as
// response.completed), or Groq's x_groq.usage when the stream had none, and
// the model of the first chunk that named one (among the first 8 data:
// objects). For an Anthropic Messages stream it returns message_start's usage
// updated by each message_delta's, with prompt = input + cache_creation +
// cache_read tokens and cached = cache_read tokens. Counts the upstream did
// not send are nil.
func (s *StreamScanner) Usage() Usage {
	t := s.last
	switch {
	case s.isAnth:
		t = s.anthropic.tokens()
	case !t.known():
		t = s.groq
	}
	return t.usage(s.model)
}

// Done reports whether the upstream body ended cleanly (io.EOF). A stream that
// was cut, or that the caller stopped reading, is not done: its usage is
// partial.
func (s *StreamScanner) Done() bool { return s.done }

// Close closes the upstream body.
func (s *StreamScanner) Close() error { return s.r.Close() }

// Read implements io.Reader.
func (s *StreamScanner) Read(p []byte) (int, error) {
	if s.strip {
		return s.readStrip(p)
	}
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	if n > 0 {
		s.observe(p[:n])
	}
	if err != nil {
		if len(s.part) > 0 && !s.long {
			s.line(s.part, false)
		}
		s.part = nil
		s.err, s.done = err, err == io.EOF
	}
	return n, err
}

// eolFinder finds line endings ("\r\n", "\n" or "\r") in b. It remembers
// where the next "\n" is, so that lines ended by "\r" alone do not make it
// search the rest of b once per line.
type eolFinder struct {
	b  []byte
	nl int // the next '\n' at or after the last i; -1: none; -2: not searched yet
}

func newEOLFinder(b []byte) eolFinder { return eolFinder{b: b, nl: -2} }

// next returns where the first line ending at or after i starts and where
// the line after it starts, or -1, -1.
func (f *eolFinder) next(i int) (int, int) {
	b := f.b
	if f.nl != -1 && f.nl < i {
		if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
			f.nl = i + j
		} else {
			f.nl = -1
		}
	}
	lim := len(b)
	if f.nl >= 0 {
		lim = f.nl
	}
	if r := bytes.IndexByte(b[i:lim], '\r'); r >= 0 {
		r += i
		if r+1 < len(b) && b[r+1] == '\n' {
			return r, r + 2
		}
		return r, r + 1
	}
	if f.nl >= 0 {
		return f.nl, f.nl + 1
	}
	return -1, -1
}

// observe reads the lines of b, which the caller passes on unchanged.
func (s *StreamScanner) observe(b []byte) {
	i := 0
	if s.afterCR && len(b) > 0 {
		s.afterCR = false
		if b[0] == '\n' {
			i = 1
		}
	}
	f := newEOLFinder(b)
	for i < len(b) {
		e, next := f.next(i)
		if e < 0 {
			if !s.long {
				if len(s.part)+len(b)-i > s.max {
					s.long = true
					s.part = reuse(s.part)
				} else {
					s.part = grow(s.part, b[i:], s.max)
				}
			}
			return
		}
		switch {
		case s.long:
			s.long = false
		case len(s.part) > 0:
			if len(s.part)+e-i <= s.max {
				s.part = grow(s.part, b[i:e], s.max)
				s.line(s.part, false)
			}
			s.part = reuse(s.part)
		case e-i <= s.max:
			s.line(b[i:e], false)
		}
		s.afterCR = b[e] == '\r' && next == len(b)
		i = next
	}
}

// grow appends b to buf, doubling its capacity up to limit when it must grow
// (append grows large slices by a quarter, which would allocate five times a
// long line on the way).
func grow(buf, b []byte, limit int) []byte {
	if n := len(buf) + len(b); n > cap(buf) {
		nb := make([]byte, len(buf), max(min(2*cap(buf), limit), n, 512))
		copy(nb, buf)
		buf = nb
	}
	return append(buf, b...)
}

// reuse empties a side buffer, dropping it when it grew large.
func reuse(b []byte) []byte {
	if cap(b) > keepBuf {
		return nil
	}
	return b[:0]
}

func (s *StreamScanner) readStrip(p []byte) (int, error) {
	for {
		if s.o0 < s.o1 {
			n := copy(p, s.buf[s.o0:s.o1])
			s.o0 += n
			return n, nil
		}
		if s.err != nil {
			return 0, s.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if s.h0 == s.h1 {
			s.h0, s.h1 = 0, 0
		}
		// Read after the held line. Make room by moving it to the front, or
		// into a larger buffer when it fills half of this one, so that a long
		// line arriving in small reads is copied O(1) times per byte.
		if h := s.h1 - s.h0; len(s.buf)-s.h1 < minRead || len(s.buf) > keepBuf && h <= stripBufSize-minRead {
			nb := s.buf
			switch {
			case len(s.buf) > keepBuf && h <= stripBufSize-minRead:
				nb = make([]byte, stripBufSize)
			case h > len(s.buf)/2 || len(s.buf)-h < minRead:
				nb = make([]byte, max(min(2*len(s.buf), s.max+minRead), stripBufSize, h+minRead))
			}
			copy(nb, s.buf[s.h0:s.h1])
			s.buf, s.h0, s.h1 = nb, 0, h
		}
		n, err := s.r.Read(s.buf[s.h1:])
		s.process(s.h0, s.h1, s.h1+n)
		if err != nil {
			s.finish(err)
		} else if n == 0 {
			return 0, nil
		}
	}
}

// process edits buf[start:end] in place, of which buf[start:h] is the line
// held back from the last read, and sets the output and the new held line.
func (s *StreamScanner) process(start, h, end int) {
	b := s.buf[start:end]
	h -= start
	end -= start
	w, i := 0, 0
	if s.afterCR && end > 0 { // then h == 0: a line ended at the last byte
		s.afterCR = false
		if b[0] == '\n' {
			if !s.crDrop {
				w = 1
			}
			i = 1
		}
	}
	f := newEOLFinder(b)
	for from := max(h, i); ; {
		e, next := f.next(from)
		if e < 0 {
			break
		}
		var drop bool
		var c0, c1 int
		if s.long {
			s.long = false
		} else {
			drop, c0, c1 = s.act(b[i:e])
		}
		s.afterCR = b[e] == '\r' && next == end
		s.crDrop = drop
		switch {
		case drop:
		case c1 > c0:
			w += copy(b[w:], b[i:i+c0])
			w += copy(b[w:], b[i+c1:next])
		default:
			if w != i {
				copy(b[w:], b[i:next])
			}
			w += next - i
		}
		i, from = next, next
	}
	if s.long || end-i > s.max {
		// An unfinished line too long to hold: pass it on unread.
		if !s.long {
			s.long, s.emitted = true, true
		}
		if w != i {
			copy(b[w:], b[i:end])
		}
		w += end - i
		i = end
	}
	s.o0, s.o1, s.h0, s.h1 = start, start+w, start+i, start+end
}

// finish ends a stripping stream with the upstream's err: an unfinished last
// line goes out as it is.
func (s *StreamScanner) finish(err error) {
	if n := s.h1 - s.h0; n > 0 {
		if !s.long && n <= s.max {
			s.line(s.buf[s.h0:s.h1], false)
		}
		copy(s.buf[s.o1:], s.buf[s.h0:s.h1])
		s.o1 += n
		s.h0, s.h1 = s.o1, s.o1
	}
	s.err, s.done = err, err == io.EOF
}

// act decides what becomes of one complete line (without its ending) when
// stripping.
func (s *StreamScanner) act(line []byte) (drop bool, c0, c1 int) {
	if len(line) == 0 { // the end of an event
		drop = s.dropped && !s.emitted
		s.dropped, s.emitted = false, false
		return drop, 0, 0
	}
	if len(line) <= s.max {
		drop, c0, c1 = s.line(line, true)
	}
	if drop {
		s.dropped = true
	} else {
		s.emitted = true
	}
	return drop, c0, c1
}

// line reads one complete line (without its ending) for usage and, with
// edit, says whether to drop it or which bytes [c0:c1] to cut from it.
func (s *StreamScanner) line(l []byte, edit bool) (drop bool, c0, c1 int) {
	if len(l) < 6 || string(l[:5]) != "data:" {
		return false, 0, 0
	}
	off := 5
	if l[5] == ' ' {
		off = 6
	}
	p := l[off:]
	if len(p) == 0 || p[0] != '{' { // [DONE], or not an object
		return false, 0, 0
	}
	// Chunks are walked in full only while looking for the model (in the
	// first few) and when they may hold usage.
	searching := s.model == "" && s.tries < modelTries
	if searching {
		s.tries++
	} else {
		u := bytes.Index(p, usageKey)
		if u < 0 {
			return false, 0, 0
		}
		if !edit {
			if nullUsageOnly(p, u) {
				return false, 0, 0
			}
		} else if c0, c1, ok := lastNullUsage(p, u); ok {
			return false, off + c0, off + c1
		}
	}
	return s.walk(p, off, edit, searching)
}

// walk is line's reading of a chunk that may hold usage or the model.
// line stays a small frame: it runs for every line, on the copy path of
// every stream, whose stack is as deep as line and what it calls.
func (s *StreamScanner) walk(p []byte, off int, edit, searching bool) (drop bool, c0, c1 int) {
	c, ok := walkChunk(p)
	if !ok {
		return false, 0, 0
	}
	s.take(&c, searching)
	if !edit || c.usages != 1 {
		return false, 0, 0
	}
	if c.usageKind() == '{' && c.choices && c.choicesEmpty {
		return true, 0, 0
	}
	if c.usageKind() == 'n' {
		return false, off + c.cut0, off + c.cut1
	}
	return false, 0, 0
}

// take keeps what c reports. It is not inlined into walk, whose frame is
// under walkChunk's.
//
//go:noinline
func (s *StreamScanner) take(c *chunk, searching bool) {
	r := c.report()
	switch {
	case r.start:
		s.anthropic, s.isAnth = anthropic{}, true
		s.anthropic.update(r.ant)
	case r.anthropic:
		s.anthropic.update(r.ant)
		s.isAnth = true
	case r.tokens.known():
		s.last = r.tokens
	}
	if r.groq.known() {
		s.groq = r.groq
	}
	if searching {
		s.model = r.model
	}
}

// nullUsageOnly reports whether every `"usage"` in p from u on that is
// followed by a colon is followed by null: then p holds no usage to read.
func nullUsageOnly(p []byte, u int) bool {
	for {
		i := skipWS(p, u+len(usageKey))
		if i < len(p) && p[i] == ':' {
			i = skipWS(p, i+1)
			if literal(p, i, "null") < 0 {
				return false
			}
		}
		j := bytes.Index(p[i:], usageKey)
		if j < 0 {
			return true
		}
		u = i + j
	}
}

// lastNullUsage is the fast path for the common "usage":null, the last
// member of a chunk with no other "usage" in it (OpenAI, vLLM). u is the
// first `"usage"` in p. It returns the same cut as walkChunk would for valid
// JSON, without reading the rest of the chunk.
func lastNullUsage(p []byte, u int) (c0, c1 int, ok bool) {
	i := skipWS(p, u+len(usageKey))
	if i >= len(p) || p[i] != ':' {
		return 0, 0, false
	}
	if c1 = literal(p, skipWS(p, i+1), "null"); c1 < 0 {
		return 0, 0, false
	}
	if i = skipWS(p, c1); i >= len(p) || p[i] != '}' || skipWS(p, i+1) != len(p) {
		return 0, 0, false
	}
	k := u - 1
	for k > 0 && isSpace(p[k]) {
		k--
	}
	switch {
	case k == 0: // the only member: p[0] is '{'
		return u, c1, true
	case p[k] == ',':
		for k--; k > 0 && isSpace(p[k]); k-- {
		}
		return k + 1, c1, true
	}
	return 0, 0, false
}
