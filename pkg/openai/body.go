package openai

import (
	"bytes"
	"encoding/json"
	"io"
)

// BodyScanner passes a non-streamed response body through unchanged and, at
// its end, reads the top-level "usage" and "model" of the JSON object it
// holds (Chat Completions, embeddings, the Responses API, Anthropic Messages;
// see Usage for how they map).
//
// It never holds a large body: it keeps at most keep bytes of its head and
// 2×keep of its tail. A body of up to keep bytes is read whole; in a longer
// one the model is read from the head and the usage from the tail, where
// every API that reports usage puts it (after the choices, the output or
// the embeddings). A body that is not a JSON object (audio, an HTML page)
// leaves the usage unknown and is not kept at all.
//
// A BodyScanner is not safe for concurrent use: call Usage and Done once Read
// has returned an error, from the goroutine that reads.
type BodyScanner struct {
	r     io.ReadCloser
	keep  int
	head  []byte
	tail  []byte // the last bytes read once the head is full
	total int
	skip  bool // not a JSON object: keep nothing
	done  bool // the upstream ended with io.EOF
	usage Usage
}

// NewBodyScanner returns a BodyScanner reading r that keeps keep bytes of
// the head and up to twice that of the tail (64 KiB holds any usage object
// and a whole ordinary chat completion).
func NewBodyScanner(r io.ReadCloser, keep int) *BodyScanner {
	return &BodyScanner{r: r, keep: keep}
}

// Read implements io.Reader.
func (b *BodyScanner) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 && !b.skip {
		b.add(p[:n])
	}
	if err == io.EOF && !b.done {
		b.done = true
		if !b.skip {
			b.usage = b.scan()
		}
		b.head, b.tail = nil, nil
	}
	return n, err
}

// add keeps what the scan needs of data.
func (b *BodyScanner) add(data []byte) {
	if b.total == 0 {
		if i := skipWS(data, 0); i < len(data) && data[i] != '{' {
			b.skip = true
			return
		}
	}
	b.total += len(data)
	if room := b.keep - len(b.head); room > 0 {
		k := min(room, len(data))
		b.head = grow(b.head, data[:k], b.keep)
		data = data[k:]
	}
	if len(data) == 0 {
		return
	}
	if len(b.tail)+len(data) > 2*b.keep {
		// Keep the last keep bytes of tail+data.
		if len(data) >= b.keep {
			b.tail = append(b.tail[:0], data[len(data)-b.keep:]...)
			return
		}
		drop := len(b.tail) + len(data) - b.keep
		b.tail = b.tail[:copy(b.tail, b.tail[drop:])]
	}
	b.tail = grow(b.tail, data, 2*b.keep)
}

// scan reads the usage of the whole body, or of its head and tail.
func (b *BodyScanner) scan() Usage {
	if b.total <= b.keep {
		return scanBody(b.head)
	}
	// Put together the object the API would have sent without the middle:
	// the head's "model" and "type", the tail's "usage".
	u := lastValue(b.tail, "usage")
	if u == nil {
		var model string
		_ = json.Unmarshal(firstString(b.head, "model"), &model)
		return Usage{Model: model}
	}
	obj := []byte(`{"usage":`)
	obj = append(obj, u...)
	for _, k := range []string{"model", "type"} {
		if v := firstString(b.head, k); v != nil {
			obj = append(append(append(append(obj, `,"`...), k...), `":`...), v...)
		}
	}
	return scanBody(append(obj, '}'))
}

// lastValue returns the JSON value of the last "key": in buf that is not
// inside a string (a quote inside a JSON string is always escaped), or nil.
func lastValue(buf []byte, key string) json.RawMessage {
	pat := []byte(`"` + key + `"`)
	for end := len(buf); ; {
		i := bytes.LastIndex(buf[:end], pat)
		if i < 0 {
			return nil
		}
		end = i
		if v := valueAt(buf, i, len(pat)); v != nil {
			return v
		}
	}
}

// firstString is lastValue's twin for the head: the first "key": whose
// value is a complete JSON string.
func firstString(buf []byte, key string) json.RawMessage {
	pat := []byte(`"` + key + `"`)
	for start := 0; start < len(buf); {
		i := bytes.Index(buf[start:], pat)
		if i < 0 {
			return nil
		}
		i += start
		if v := valueAt(buf, i, len(pat)); len(v) > 0 && v[0] == '"' {
			return v
		}
		start = i + len(pat)
	}
	return nil
}

// valueAt decodes the value after the key at buf[i:i+n] and its colon.
func valueAt(buf []byte, i, n int) json.RawMessage {
	if i > 0 && buf[i-1] == '\\' {
		return nil // an escaped quote: inside a string
	}
	j := skipWS(buf, i+n)
	if j >= len(buf) || buf[j] != ':' {
		return nil
	}
	var v json.RawMessage
	if json.NewDecoder(bytes.NewReader(buf[j+1:])).Decode(&v) != nil {
		return nil
	}
	return v
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
// that, or when the body was not a JSON object, it is unknown.
func (b *BodyScanner) Usage() Usage { return b.usage }

// Done reports whether the body was read to its end (io.EOF).
func (b *BodyScanner) Done() bool { return b.done }

// Close closes the upstream body.
func (b *BodyScanner) Close() error { return b.r.Close() }
