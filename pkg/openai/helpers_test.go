package openai

import (
	"errors"
	"io"
)

// chunkReader is an upstream body that returns its chunks one per Read (a
// chunk larger than the caller's buffer takes several), then err (io.EOF when
// nil).
type chunkReader struct {
	chunks [][]byte
	err    error
	closed bool
}

func newChunkReader(err error, chunks ...[]byte) *chunkReader {
	return &chunkReader{chunks: chunks, err: err}
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

func (r *chunkReader) Close() error {
	r.closed = true
	return nil
}

// readCloser gives a plain io.Reader (an iotest wrapper, say) a Close.
type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

// readAll reads r to its end with a buffer of size n and returns what it read
// and the error that ended it (nil for io.EOF).
func readAll(r io.Reader, n int) ([]byte, error) {
	var out []byte
	buf := make([]byte, n)
	for range 1 << 26 { // bounded: no test stream is that long
		k, err := r.Read(buf)
		out = append(out, buf[:k]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	return out, errors.New("readAll: no end")
}

// usageJSON is a Usage as kept in testdata/sse/<case>.usage.json.
type usageJSON struct {
	Model            *string `json:"model"`
	PromptTokens     *int64  `json:"prompt_tokens"`
	CompletionTokens *int64  `json:"completion_tokens"`
	TotalTokens      *int64  `json:"total_tokens"`
	ReasoningTokens  *int64  `json:"reasoning_tokens"`
	CachedTokens     *int64  `json:"cached_tokens"`
}

func toJSON(u Usage) usageJSON {
	j := usageJSON{
		PromptTokens:     u.PromptTokens,
		CompletionTokens: u.CompletionTokens,
		TotalTokens:      u.TotalTokens,
		ReasoningTokens:  u.ReasoningTokens,
		CachedTokens:     u.CachedTokens,
	}
	if u.Model != "" {
		j.Model = &u.Model
	}
	return j
}

func ptr(v int64) *int64 { return &v }

// scan runs a StreamScanner fed by up, read with a buffer of size n, and
// returns the output, the usage and the read error.
func scan(up io.ReadCloser, strip bool, n int) ([]byte, Usage, error) {
	s := NewStreamScanner(up, strip)
	out, err := readAll(s, n)
	return out, s.Usage(), err
}

// nextSplit is the cut after k in an input of n bytes: every splitStride
// bytes, and always n itself.
func nextSplit(k, n int) int {
	if k < n && k+splitStride > n {
		return n
	}
	return k + splitStride
}
