package openai

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sse joins events as an upstream sends them: "event:" and "data:" lines,
// each event ended by a blank line.
func sse(events ...[2]string) string {
	var b strings.Builder
	for _, e := range events {
		if e[0] != "" {
			b.WriteString("event: " + e[0] + "\n")
		}
		b.WriteString("data: " + e[1] + "\n\n")
	}
	return b.String()
}

const respObj = `"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","user":null,"metadata":{}`

func responsesStream(last, lastResponse string) string {
	return sse(
		[2]string{"response.created", `{"type":"response.created","sequence_number":0,"response":{` + respObj + `,"status":"in_progress","output":[],"usage":null}}`},
		[2]string{"response.in_progress", `{"type":"response.in_progress","sequence_number":1,"response":{` + respObj + `,"status":"in_progress","output":[],"usage":null}}`},
		[2]string{"response.output_item.added", `{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","type":"message","status":"in_progress","content":[],"role":"assistant"}}`},
		[2]string{"response.content_part.added", `{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}`},
		[2]string{"response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","output_index":0,"content_index":0,"delta":"Say \"usage\": {"}`},
		[2]string{"response.output_text.done", `{"type":"response.output_text.done","sequence_number":5,"item_id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","output_index":0,"content_index":0,"text":"Say \"usage\": {"}`},
		[2]string{last, `{"type":"` + last + `","sequence_number":6,"response":{` + respObj + `,"output":[{"id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Say \"usage\": {","annotations":[]}]}],` + lastResponse + `}}`},
	)
}

const (
	respUsage = `"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":5},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":48}`
	antStart  = `{"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}`
)

func anthropicStream(delta string) string {
	return sse(
		[2]string{"message_start", antStart},
		[2]string{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
		[2]string{"ping", `{"type": "ping"}`},
		[2]string{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`},
		[2]string{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! \"usage\":{\"output_tokens\":9}"}}`},
		[2]string{"content_block_stop", `{"type":"content_block_stop","index":0}`},
		[2]string{"message_delta", delta},
		[2]string{"message_stop", `{"type":"message_stop"}`},
	)
}

// TestStreamScannerUsageAPIs reads the usage of Responses API and Anthropic
// Messages streams, at every split of the stream. Neither is stripped: with
// strip the bytes pass unchanged too.
func TestStreamScannerUsageAPIs(t *testing.T) {
	m := func(s string) *string { return &s }
	resp := usageJSON{Model: m("gpt-4.1-2025-04-14"), PromptTokens: ptr(37), CompletionTokens: ptr(11), TotalTokens: ptr(48), CachedTokens: ptr(5), ReasoningTokens: ptr(3)}
	// prompt = input + cache_creation + cache_read; cached = cache_read.
	ant := usageJSON{Model: m("claude-sonnet-4-5-20250929"), PromptTokens: ptr(135), CompletionTokens: ptr(15), TotalTokens: ptr(150), CachedTokens: ptr(100)}
	tests := []struct {
		name string
		in   string
		want usageJSON
	}{
		{"responses completed", responsesStream("response.completed", `"status":"completed",`+respUsage), resp},
		{"responses incomplete", responsesStream("response.incomplete", `"status":"incomplete",`+respUsage), resp},
		{"responses failed with usage", responsesStream("response.failed", `"status":"failed",`+respUsage), resp},
		{"responses failed without usage", responsesStream("response.failed", `"status":"failed","usage":null`), usageJSON{Model: resp.Model}},
		{"responses cut before completed", strings.Split(responsesStream("response.completed", respUsage), "event: response.completed")[0], usageJSON{Model: resp.Model}},
		{"anthropic", anthropicStream(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}`), ant},
		{"anthropic cumulative delta", anthropicStream(`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":15}}`), ant},
		{"anthropic no cache fields", sse([2]string{"message_start", `{"type":"message_start","message":{"model":"claude-3-haiku","usage":{"input_tokens":7,"output_tokens":1}}}`}, [2]string{"message_delta", `{"type":"message_delta","delta":{},"usage":{"output_tokens":3}}`}),
			usageJSON{Model: m("claude-3-haiku"), PromptTokens: ptr(7), CompletionTokens: ptr(3), TotalTokens: ptr(10)}},
		{"anthropic cut before message_delta", strings.Split(anthropicStream(`{}`), "event: content_block_start")[0],
			usageJSON{Model: ant.Model, PromptTokens: ptr(135), CompletionTokens: ptr(1), TotalTokens: ptr(136), CachedTokens: ptr(100)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for k := 0; k <= len(tc.in); k = nextSplit(k, len(tc.in)) {
				for _, strip := range []bool{false, true} {
					got, u, err := scan(newChunkReader(nil, []byte(tc.in[:k]), []byte(tc.in[k:])), strip, 512)
					if err != nil || string(got) != tc.in {
						t.Fatalf("strip=%v split at %d: output differs or %v (-want +got):\n%s", strip, k, err, cmp.Diff(tc.in, string(got)))
					}
					if diff := cmp.Diff(tc.want, toJSON(u)); diff != "" {
						t.Fatalf("strip=%v split at %d: Usage() differs (-want +got):\n%s", strip, k, diff)
					}
				}
			}
		})
	}
}

func TestBodyScannerUsageAPIs(t *testing.T) {
	m := func(s string) *string { return &s }
	tests := []struct {
		name string
		body string
		want usageJSON
	}{
		{"responses", `{` + respObj + `,"status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],` + respUsage + `}`,
			usageJSON{Model: m("gpt-4.1-2025-04-14"), PromptTokens: ptr(37), CompletionTokens: ptr(11), TotalTokens: ptr(48), CachedTokens: ptr(5), ReasoningTokens: ptr(3)}},
		{"anthropic", `{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":1800,"output_tokens":503}}`,
			usageJSON{Model: m("claude-sonnet-4-5-20250929"), PromptTokens: ptr(3895), CompletionTokens: ptr(503), TotalTokens: ptr(4398), CachedTokens: ptr(1800)}},
		{"anthropic without output", `{"type":"message","model":"c","usage":{"input_tokens":5}}`,
			usageJSON{Model: m("c"), PromptTokens: ptr(5)}},
		{"anthropic overflow is unknown", `{"type":"message","model":"c","usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":1,"output_tokens":1}}`,
			usageJSON{Model: m("c"), CompletionTokens: ptr(1), CachedTokens: ptr(1)}},
		{"anthropic error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, usageJSON{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for n := 1; n <= len(tc.body); n += 1 + n/8 {
				b := NewBodyScanner(newChunkReader(nil, []byte(tc.body)), 1<<20)
				if got, err := readAll(b, n); err != nil || string(got) != tc.body {
					t.Fatalf("reads of %d: body changed or %v", n, err)
				}
				if diff := cmp.Diff(tc.want, toJSON(b.Usage())); diff != "" {
					t.Fatalf("reads of %s: Usage() differs (-want +got):\n%s", strconv.Itoa(n), diff)
				}
			}
		})
	}
}
