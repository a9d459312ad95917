package openai

import "io"

// BodyScanner passes a non-streamed response body through unchanged and, at
// its end, reads the top-level "usage" and "model" of the JSON object it
// holds (Chat Completions, embeddings, the Responses API, Anthropic Messages;
// see Usage for how they map). It keeps a copy of at most limit bytes; a longer body (or one that is
// not a JSON object, such as audio or an HTML page) leaves the usage unknown.
//
// A BodyScanner is not safe for concurrent use: call Usage and Done once Read
// has returned an error, from the goroutine that reads.
type BodyScanner struct {
	r     io.ReadCloser
	limit int
	buf   []byte
	over  bool // the body is longer than limit
	done  bool // the upstream ended with io.EOF
	usage Usage
}

// NewBodyScanner returns a BodyScanner reading r that keeps at most limit
// bytes (4 MiB is plenty for a chat completion).
func NewBodyScanner(r io.ReadCloser, limit int) *BodyScanner {
	return &BodyScanner{r: r, limit: limit}
}

// Read implements io.Reader.
func (b *BodyScanner) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 && !b.over {
		switch i := skipWS(p[:n], 0); {
		case len(b.buf) == 0 && i < n && p[i] != '{':
			// Keep nothing of a body that is not a JSON object (audio, say).
			b.over = true
		case len(b.buf)+n > b.limit:
			b.over, b.buf = true, nil
		default:
			b.buf = grow(b.buf, p[:n], b.limit)
		}
	}
	if err == io.EOF && !b.done {
		b.done = true
		if !b.over {
			b.usage = scanBody(b.buf)
		}
		b.buf = nil
	}
	return n, err
}

// scanBody reads the usage and model of a complete response body.
func scanBody(body []byte) Usage {
	c, ok := walkChunk(body)
	if !ok {
		return Usage{}
	}
	r := c.report()
	t := r.tokens
	if r.anthropic {
		var a anthropic
		a.update(r.ant)
		t = a.tokens()
	}
	if !t.known() {
		t = r.groq
	}
	return t.usage(r.model)
}

// Usage returns what the body reported, once Read has returned io.EOF; before
// that, or when the body was too long or not a JSON object, it is unknown.
func (b *BodyScanner) Usage() Usage { return b.usage }

// Done reports whether the body was read to its end (io.EOF).
func (b *BodyScanner) Done() bool { return b.done }

// Close closes the upstream body.
func (b *BodyScanner) Close() error { return b.r.Close() }
