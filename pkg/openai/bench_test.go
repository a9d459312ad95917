package openai

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchStream is a typical streamed chat completion as OpenAI sends it when
// asked for usage: n content chunks, each with "usage":null, the usage chunk
// and [DONE].
func benchStream(n int) []byte {
	var b bytes.Buffer
	words := []string{"The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."}
	for i := range n {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[{"index":0,"delta":{"content":%q},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n", words[i%len(words)])
	}
	b.WriteString(`data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// eventReader returns one SSE event per Read, as a network upstream does.
type eventReader struct {
	events [][]byte
	i      int
}

func (r *eventReader) reset() *eventReader {
	r.i = 0
	return r
}

func newEventReader(in []byte) *eventReader {
	var ev [][]byte
	for len(in) > 0 {
		j := bytes.Index(in, []byte("\n\n"))
		if j < 0 {
			j = len(in) - 2
		}
		ev = append(ev, in[:j+2])
		in = in[j+2:]
	}
	return &eventReader{events: ev}
}

func (r *eventReader) Read(p []byte) (int, error) {
	if r.i >= len(r.events) {
		return 0, io.EOF
	}
	n := copy(p, r.events[r.i])
	r.i++
	return n, nil
}

func (r *eventReader) Close() error { return nil }

// BenchmarkStreamScanner reads a 1000-event chat stream (about 290 KB)
// through the scanner with a 16 KiB buffer, as the proxy does.
//
// Allocation budget, per stream (not per event): decoding the first chunk
// (for the model) and the usage chunk with encoding/json costs about 100
// allocations each; every other event is passed on without allocating, so a
// change that allocates per event shows as allocs/op in the thousands.
func BenchmarkStreamScanner(b *testing.B) {
	asked := benchStream(1000)
	plain := bytes.ReplaceAll(asked, []byte(`,"usage":null`), nil)
	buf := make([]byte, 16<<10)
	for _, bc := range []struct {
		name  string
		in    []byte
		strip bool
	}{
		{"strip=false/plain", plain, false},
		{"strip=false/usage_null", asked, false},
		{"strip=true/usage_null", asked, true},
	} {
		for _, per := range []bool{false, true} {
			name := bc.name + "/bulk"
			if per {
				name = bc.name + "/per_event"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(bc.in)))
				b.ReportAllocs()
				events := newEventReader(bc.in)
				for b.Loop() {
					var up io.ReadCloser = readCloser{bytes.NewReader(bc.in)}
					if per {
						up = events.reset()
					}
					s := NewStreamScanner(up, bc.strip)
					for {
						if _, err := s.Read(buf); err != nil {
							break
						}
					}
				}
			})
		}
	}
}

// benchRequest is a chat request carrying a base64 image of about 5 MB.
func benchRequest() []byte {
	img := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x89, 'P', 'N', 'G', 0, 1, 2, 3, 250}, 5<<20/12))
	return []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":[{"type":"text","text":"What is in this image? Réponds en français."},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + img + `","detail":"high"}}]}],` +
		`"temperature":0.2,"max_tokens":300,"stream":true}`)
}

// BenchmarkInspectRequest: json.Valid, then a json.Decoder walk of the
// top-level members whose buffer grows to hold the largest one.
func BenchmarkInspectRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"image_5MB", benchRequest()},
		{"small", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say this is a test"}],"stream":true,"stream_options":{"include_usage":true}}`)},
		{"chinese_64KB", []byte(`{"model":"qwen","messages":[{"role":"user","content":"` + strings.Repeat("你好世界，", 4400) + `"}],"stream":true}`)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if !InspectRequest(bc.body).Valid {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// BenchmarkInjectIncludeUsage: one scan plus one copy of the body.
func BenchmarkInjectIncludeUsage(b *testing.B) {
	body := benchRequest()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := InjectIncludeUsage(body); !ok {
			b.Fatal("not injected")
		}
	}
}
