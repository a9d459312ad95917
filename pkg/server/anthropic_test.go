package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/aiproxy/aiproxy/pkg/admin"
)

// anthropicUpstream speaks Anthropic's Messages API, stream and not, and
// records the auth headers it saw.
type anthropicUpstream struct {
	mu      sync.Mutex
	keys    []string
	version []string
	bearer  []string
}

const anthropicStream = "event: message_start\n" +
	`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":3,"cache_read_input_tokens":7,"output_tokens":1}}}` + "\n\n" +
	"event: content_block_start\n" +
	`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
	"event: content_block_delta\n" +
	`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n" +
	"event: content_block_stop\n" +
	`data: {"type":"content_block_stop","index":0}` + "\n\n" +
	"event: message_delta\n" +
	`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}` + "\n\n" +
	"event: message_stop\n" +
	`data: {"type":"message_stop"}` + "\n\n"

const anthropicMessage = `{"id":"msg_2","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":4,"cache_creation_input_tokens":0,"cache_read_input_tokens":2}}`

func (u *anthropicUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.keys = append(u.keys, r.Header.Get("X-Api-Key"))
	u.version = append(u.version, r.Header.Get("Anthropic-Version"))
	u.bearer = append(u.bearer, r.Header.Get("Authorization"))
	u.mu.Unlock()
	if r.URL.Path != "/v1/messages" {
		http.NotFound(w, r)
		return
	}
	if strings.Contains(string(b), `"stream":true`) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, anthropicStream)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, anthropicMessage)
}

// The official Anthropic SDK, pointed at aiproxy with a user key, works
// stream and not: the upstream gets the provider key in x-api-key and the
// SDK's anthropic-version, and usage (cache tokens included) is counted.
func TestAnthropicSDK_ThroughProxy(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	up := &anthropicUpstream{}
	srv := upstreamFunc(t, h, "anthropic-placeholder.example", "sk-placeholder-anthropic-01", up.ServeHTTP)
	if err := h.svc.AddProviderKey(context.Background(), admin.ProviderKey{Host: "api.anthropic.com", Key: "sk-ant-upstream-0123456789", BaseURL: srv.URL, Alias: "anthropic"}); err != nil {
		t.Fatal(err)
	}
	client := anthropic.NewClient(option.WithAPIKey(h.key), option.WithBaseURL(h.proxy.URL+"/anthropic/"), option.WithMaxRetries(0))
	params := anthropic.MessageNewParams{
		MaxTokens: 64,
		Model:     "claude-x",
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}
	msg, err := client.Messages.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Usage.InputTokens != 10 || len(msg.Content) != 1 || msg.Content[0].Text != "Hi" {
		t.Errorf("message = %+v", msg)
	}
	stream := client.Messages.NewStreaming(context.Background(), params)
	var text strings.Builder
	for stream.Next() {
		if ev := stream.Current(); ev.Type == "content_block_delta" {
			text.WriteString(ev.Delta.Text)
		}
	}
	if err := stream.Err(); err != nil || text.String() != "Hello" {
		t.Errorf("stream: %q, %v", text.String(), err)
	}
	up.mu.Lock()
	for i := range up.keys {
		if up.keys[i] != "sk-ant-upstream-0123456789" || up.version[i] == "" || up.bearer[i] != "" {
			t.Errorf("request %d: x-api-key %q anthropic-version %q authorization %q", i, up.keys[i], up.version[i], up.bearer[i])
		}
	}
	up.mu.Unlock()
	h.flushUsage()
	rows := h.stats("")
	// 10+0+2 and 25+3+7 prompt tokens, 4 and 15 completion tokens.
	if len(rows) != 1 || rows[0].Requests != 2 || rows[0].PromptTokens != 47 || rows[0].CompletionTokens != 19 || rows[0].TotalTokens != 66 {
		t.Errorf("usage = %+v", rows)
	}
}
