// Package bench measures what aiproxy adds to a request, side by side with a
// bare net/http/httputil.ReverseProxy (the baseline) and, when installed,
// nginx: a fast mock OpenAI upstream, the baseline proxy, load generators
// (open loop at a fixed rate, closed loop, stream probes, many concurrent
// streams), per-process CPU and RSS from /proc, and the report. The driver
// that starts each server as its own process is
// pkg/bench/cmd/aiproxy-bench.
package bench

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Headers a request sends to choose the mock's answer. Every proxy passes
// them through unchanged.
const (
	// HeaderEvents asks for a text/event-stream answer of N content events
	// (a body with "stream":true gets DefaultEvents without it).
	HeaderEvents = "X-Mock-Events"
	// HeaderPace is the time between two events, as a Go duration ("10ms").
	HeaderPace = "X-Mock-Pace"
	// HeaderLatency replaces the mock's fixed latency for one request.
	HeaderLatency = "X-Mock-Latency"
)

// DefaultEvents is the length of a stream whose request did not say.
const DefaultEvents = 10

// Mock is a fast OpenAI-compatible upstream. A non-stream request gets a chat
// completion with usage; a stream request gets N chunks at the chosen pace,
// each carrying its send time in "sent_ns" (the clock is the machine's, so a
// client on the same host computes the delivery delay of every event), then
// the usage chunk when the request asked for stream_options.include_usage
// (with "usage":null on every content chunk, as OpenAI does), then [DONE].
// It keeps no per-request state and allocates little, so that it adds as
// little as possible to what is measured.
type Mock struct {
	// Latency delays every answer's headers by this long.
	Latency time.Duration
}

// Completion is the mock's non-stream answer.
var Completion = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"This is a test."},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17},"system_fingerprint":"fp_bench"}`)

var completionLen = strconv.Itoa(len(Completion))

const (
	chunkHead = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]`
	usageNull   = `,"usage":null`
	sentField   = `,"sent_ns":`
	usageChunk1 = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",` +
		`"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":`
	done = "data: [DONE]\n\n"
)

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (m *Mock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bp := bodyPool.Get().(*[]byte)
	body, err := readAll(r.Body, (*bp)[:0])
	defer func() { *bp = body[:0]; bodyPool.Put(bp) }()
	if err != nil {
		return // the client went away
	}
	events := -1
	if v := r.Header.Get(HeaderEvents); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			events = n
		}
	}
	if events < 0 && jsonTrue(body, `"stream"`) {
		events = DefaultEvents
	}
	lat := m.Latency
	if v := r.Header.Get(HeaderLatency); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			lat = d
		}
	}
	if lat > 0 {
		t := time.NewTimer(lat)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	h := w.Header()
	if events < 0 {
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", completionLen)
		h.Set("X-Request-Id", "req_bench")
		w.Write(Completion)
		return
	}
	var pace time.Duration
	if v := r.Header.Get(HeaderPace); v != "" {
		pace, _ = time.ParseDuration(v)
	}
	m.stream(w, r, events, pace, jsonTrue(body, `"include_usage"`))
}

// stream writes events chunks pace apart, flushing each.
func (m *Mock) stream(w http.ResponseWriter, r *http.Request, events int, pace time.Duration, usage bool) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Request-Id", "req_bench")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	ctx := r.Context()
	var t *time.Timer
	buf := make([]byte, 0, 512)
	for i := 0; i < events; i++ {
		if i > 0 && pace > 0 {
			if t == nil {
				t = time.NewTimer(pace)
			} else {
				t.Reset(pace)
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		buf = append(buf[:0], chunkHead...)
		if usage {
			buf = append(buf, usageNull...)
		}
		buf = append(buf, sentField...)
		buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
		buf = append(buf, "}\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	if usage {
		buf = append(buf[:0], usageChunk1...)
		buf = strconv.AppendInt(buf, int64(events), 10)
		buf = append(buf, `,"total_tokens":`...)
		buf = strconv.AppendInt(buf, int64(12+events), 10)
		buf = append(buf, "}}\n\n"...)
		w.Write(buf)
	}
	io.WriteString(w, done)
}

// readAll appends r to b.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// jsonTrue reports whether key (with its quotes) appears in body followed by
// a colon and true: enough for the mock, which reads only its own clients'
// requests and aiproxy's injected stream_options.
func jsonTrue(body []byte, key string) bool {
	for {
		i := bytes.Index(body, []byte(key))
		if i < 0 {
			return false
		}
		body = body[i+len(key):]
		j := 0
		for j < len(body) && (body[j] == ' ' || body[j] == '\t' || body[j] == '\n' || body[j] == '\r') {
			j++
		}
		if j < len(body) && body[j] == ':' {
			j++
			for j < len(body) && (body[j] == ' ' || body[j] == '\t' || body[j] == '\n' || body[j] == '\r') {
				j++
			}
			if bytes.HasPrefix(body[j:], []byte("true")) {
				return true
			}
		}
	}
}
