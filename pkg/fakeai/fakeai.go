// Package fakeai is a small OpenAI-compatible upstream for tests and
// benchmarks. The mode of each answer comes from the X-Fake-Mode request
// header (which aiproxy passes through):
//
//	ok          chat completion JSON with usage (the default)
//	sse:N:MS    N chunks MS milliseconds apart, the usage chunk when the
//	            request asked for stream_options.include_usage, then [DONE]
//	gated:N     like sse, but each chunk after the first waits for Gate
//	hang        accept the request and never answer
//	hang-body   send headers, then nothing
//	cut:K       K chunks, then drop the connection without ending the body
//	status:C    status C with an OpenAI error body, Retry-After and x-ratelimit-*
//	redirect:U  302 to U
//	echo        the request's method, path, headers and body as JSON
//	gzip        an SSE stream compressed with Content-Encoding: gzip
//	trailer     a body followed by an X-Fake-Trailer trailer
//
// Every request is recorded (headers, body and whether it was complete).
package fakeai

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Usage numbers every answer reports.
const (
	PromptTokens     = 11
	CompletionTokens = 7
)

// Request is what the fake saw of one request.
type Request struct {
	Method       string
	Path         string
	Query        string
	Header       http.Header
	Body         []byte
	BodyComplete bool
}

// Server is the fake upstream's handler.
type Server struct {
	// Gate releases the chunks of a gated stream one at a time.
	Gate chan struct{}
	// Started receives one value as each request arrives, once its body
	// has been read.
	Started chan struct{}
	// Done receives one value each time a handler returns, with the
	// reason: "ok" or "canceled" (the client went away).
	Done chan string

	mu       sync.Mutex
	requests []Request
}

// New returns a fake upstream.
func New() *Server {
	return &Server{Gate: make(chan struct{}), Started: make(chan struct{}, 10000), Done: make(chan string, 10000)}
}

// Requests returns a copy of the requests seen so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count is how many requests the fake has seen.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, BodyComplete: err == nil,
	})
	s.mu.Unlock()
	select {
	case s.Started <- struct{}{}:
	default:
	}
	reason := "ok"
	defer func() {
		select {
		case s.Done <- reason:
		default:
		}
	}()
	if err != nil {
		reason = "body-error"
		return
	}
	var req struct {
		Model         string `json:"model"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &req)
	if req.Model == "" {
		req.Model = "gpt-fake"
	}
	mode, arg, _ := strings.Cut(r.Header.Get("X-Fake-Mode"), ":")
	switch mode {
	case "", "ok":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "req_fake")
		w.Header().Set("Openai-Organization", "org-fake")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			req.Model, PromptTokens, CompletionTokens, PromptTokens+CompletionTokens)
	case "sse", "gated", "cut", "gzip":
		n, pace := 3, time.Duration(0)
		parts := strings.Split(arg, ":")
		if v, err := strconv.Atoi(parts[0]); err == nil {
			n = v
		}
		if len(parts) > 1 {
			if v, err := strconv.Atoi(parts[1]); err == nil {
				pace = time.Duration(v) * time.Millisecond
			}
		}
		if !s.stream(w, r, mode, n, pace, req.Model, req.StreamOptions.IncludeUsage) {
			reason = "canceled"
		}
	case "hang":
		<-r.Context().Done()
		reason = "canceled"
	case "hang-body":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		reason = "canceled"
	case "status":
		code, _ := strconv.Atoi(arg)
		if code == 0 {
			code = 500
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
		w.Header().Set("X-Ratelimit-Reset-Requests", "7s")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"fake status %d","type":"fake_error","code":"fake_%d"}}`, code, code)
	case "redirect":
		http.Redirect(w, r, arg, http.StatusFound)
	case "echo":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host,
			"header": r.Header, "body": string(body),
		})
	case "trailer":
		w.Header().Set("Trailer", "X-Fake-Trailer")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "body")
		w.Header().Set("X-Fake-Trailer", "done")
	default:
		http.Error(w, "unknown fake mode", http.StatusBadRequest)
	}
}

// Chunk returns the i-th SSE chunk of a stream for model.
func Chunk(model string, i int) string {
	return fmt.Sprintf(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":%q,"choices":[{"index":0,"delta":{"content":"tok%d"},"finish_reason":null}]}`+"\n\n", model, i)
}

// UsageChunk is the usage-only chunk sent when the client asked for it.
func UsageChunk(model string) string {
	return fmt.Sprintf(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":%q,"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n",
		model, PromptTokens, CompletionTokens, PromptTokens+CompletionTokens)
}

// stream writes an SSE answer; it reports false if the client went away.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, mode string, n int, pace time.Duration, model string, usage bool) bool {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	var out io.Writer = w
	var gz *gzip.Writer
	if mode == "gzip" {
		w.Header().Set("Content-Encoding", "gzip")
		gz = gzip.NewWriter(w)
		out = gz
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() {
		if gz != nil {
			gz.Flush()
		}
		rc.Flush()
	}
	flush()
	ctx := r.Context()
	for i := 0; i < n; i++ {
		if i > 0 {
			switch {
			case mode == "gated":
				select {
				case <-s.Gate:
				case <-ctx.Done():
					return false
				}
			case pace > 0:
				t := time.NewTimer(pace)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return false
				}
			}
		}
		if ctx.Err() != nil {
			return false
		}
		if _, err := io.WriteString(out, Chunk(model, i)); err != nil {
			return false
		}
		flush()
	}
	if mode == "cut" {
		// Drop the connection without the terminating chunk.
		panic(http.ErrAbortHandler)
	}
	if usage {
		io.WriteString(out, UsageChunk(model))
	}
	io.WriteString(out, "data: [DONE]\n\n")
	if gz != nil {
		gz.Close()
	}
	flush()
	return true
}
