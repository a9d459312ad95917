package openai

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

func TestBodyScanner(t *testing.T) {
	m := func(s string) *string { return &s }
	tests := []struct {
		name  string
		body  string
		limit int
		want  usageJSON
	}{
		{"chat completion", `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"usage\": {"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":4}}}`, 4 << 20,
			usageJSON{Model: m("gpt-4o-2024-08-06"), PromptTokens: ptr(19), CompletionTokens: ptr(10), TotalTokens: ptr(29), CachedTokens: ptr(3), ReasoningTokens: ptr(4)}},
		{"pretty printed", "{\n  \"model\": \"m\",\n  \"usage\": {\n    \"prompt_tokens\": 1,\n    \"total_tokens\": 1\n  }\n}\n", 4 << 20,
			usageJSON{Model: m("m"), PromptTokens: ptr(1), TotalTokens: ptr(1)}},
		{"embeddings", `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`, 4 << 20,
			usageJSON{Model: m("text-embedding-3-small"), PromptTokens: ptr(8), TotalTokens: ptr(8)}},
		{"responses api", `{"id":"resp_1","object":"response","model":"gpt-4.1","output":[],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}`, 4 << 20,
			usageJSON{Model: m("gpt-4.1"), PromptTokens: ptr(36), CompletionTokens: ptr(87), TotalTokens: ptr(123), CachedTokens: ptr(0), ReasoningTokens: ptr(0)}},
		{"nested usage only", `{"model":"m","data":{"usage":{"prompt_tokens":1}}}`, 4 << 20, usageJSON{Model: m("m")}},
		{"error body", `{"error":{"message":"Rate limit","type":"requests","code":"rate_limit_exceeded"}}`, 4 << 20, usageJSON{}},
		{"not JSON", `<html>502 Bad Gateway</html>`, 4 << 20, usageJSON{}},
		{"truncated", `{"model":"m","usage":{"prompt_tokens":1}`, 4 << 20, usageJSON{}},
		{"array", `[{"usage":{"prompt_tokens":1}}]`, 4 << 20, usageJSON{}},
		{"longer than keep: model from the head", `{"model":"m","usage":{"prompt_tokens":1}}`, 20, usageJSON{Model: m("m")}},
		{"longer than keep: usage from the tail", `{"model":"m","data":"` + strings.Repeat("x", 100) + `","usage":{"prompt_tokens":1}}`, 32,
			usageJSON{Model: m("m"), PromptTokens: ptr(1)}},
		{"longer than keep: quoted usage in a string", `{"model":"m","data":"` + strings.Repeat("x", 100) + `\"usage\":{\"prompt_tokens\":9}"}`, 32,
			usageJSON{Model: m("m")}},
		{"anthropic, long", `{"type":"message","model":"claude-x","content":[{"type":"text","text":"` + strings.Repeat("y", 200) + `"}],"usage":{"input_tokens":5,"output_tokens":3}}`, 40,
			usageJSON{Model: m("claude-x"), PromptTokens: ptr(5), CompletionTokens: ptr(3), TotalTokens: ptr(8)}},
		{"exactly the limit", `{"usage":{"prompt_tokens":1}}`, 29, usageJSON{PromptTokens: ptr(1)}},
		{"empty", ``, 4 << 20, usageJSON{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, rd := range []struct {
				name string
				r    func() io.Reader
			}{
				{"whole", func() io.Reader { return strings.NewReader(tc.body) }},
				{"OneByteReader", func() io.Reader { return iotest.OneByteReader(strings.NewReader(tc.body)) }},
				{"DataErrReader", func() io.Reader { return iotest.DataErrReader(strings.NewReader(tc.body)) }},
			} {
				b := NewBodyScanner(readCloser{rd.r()}, tc.limit)
				got, err := readAll(b, 5)
				if err != nil || string(got) != tc.body {
					t.Fatalf("%s: read %q, %v; want the body unchanged", rd.name, got, err)
				}
				if diff := cmp.Diff(tc.want, toJSON(b.Usage())); diff != "" {
					t.Errorf("%s: Usage() differs (-want +got):\n%s", rd.name, diff)
				}
				if !b.Done() {
					t.Errorf("%s: Done() = false after io.EOF", rd.name)
				}
			}
		})
	}
}

func TestBodyScannerKeepsNoNonJSON(t *testing.T) {
	audio := append([]byte("ID3\x04"), bytes.Repeat([]byte{0xff, 0xfb, 0x90}, 1000)...)
	b := NewBodyScanner(readCloser{bytes.NewReader(audio)}, 4<<20)
	buf := make([]byte, 100)
	if _, err := b.Read(buf); err != nil {
		t.Fatal(err)
	}
	if b.head != nil || b.tail != nil {
		t.Errorf("kept %d bytes of a body that is not JSON", len(b.head)+len(b.tail))
	}
	if got, err := readAll(b, 512); err != nil || !bytes.Equal(append(buf, got...), audio) {
		t.Errorf("the body changed, or %v", err)
	}
	if b.Usage().Known() {
		t.Errorf("Usage() of audio is known")
	}
}

// A large JSON answer is not held whole: what the scanner keeps stays
// bounded by its keep size, and the usage at the end is still read.
func TestBodyScanner_LargeBodyKeepsHeadAndTailOnly(t *testing.T) {
	body := `{"model":"m","data":[` + strings.Repeat(`{"embedding":[0.1,0.2]},`, 200000) + `{}],"usage":{"prompt_tokens":8,"total_tokens":8}}`
	b := NewBodyScanner(readCloser{strings.NewReader(body)}, 64<<10)
	buf := make([]byte, 32<<10)
	most := 0
	for {
		_, err := b.Read(buf)
		most = max(most, cap(b.head)+cap(b.tail))
		if err != nil {
			break
		}
	}
	if most > 3*64<<10 {
		t.Errorf("kept up to %d bytes of a %d-byte body", most, len(body))
	}
	if u := b.Usage(); u.PromptTokens == nil || *u.PromptTokens != 8 || u.Model != "m" {
		t.Errorf("Usage() = %+v", toJSON(u))
	}
}

func TestBodyScannerCut(t *testing.T) {
	cut := errors.New("connection reset")
	body := `{"model":"m","usage":{"prompt_tokens":1}}`
	up := newChunkReader(cut, []byte(body))
	b := NewBodyScanner(up, 1<<20)
	if u := b.Usage(); u.Known() || u.Model != "" {
		t.Errorf("Usage() before reading = %+v, want unknown", u)
	}
	got, err := readAll(b, 64)
	if !errors.Is(err, cut) || !bytes.Equal(got, []byte(body)) {
		t.Errorf("read %q, %v; want the body and %v", got, err, cut)
	}
	if u := b.Usage(); u.Known() || b.Done() {
		t.Errorf("after a cut: Usage() = %+v, Done() = %v; want unknown, false", u, b.Done())
	}
	if err := b.Close(); err != nil || !up.closed {
		t.Errorf("Close() = %v, upstream closed = %v", err, up.closed)
	}
}
