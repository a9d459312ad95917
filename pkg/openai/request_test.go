package openai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func nested(open, close string, n int, inner string) string {
	return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
}

var inspectTests = []struct {
	name string
	body string
	want RequestInfo
}{
	{"plain", `{"model":"gpt-4o","messages":[],"stream":true}`, RequestInfo{Model: "gpt-4o", Stream: true, Valid: true}},
	{"include_usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, RequestInfo{Model: "m", Stream: true, IncludeUsage: true, Valid: true}},
	{"include_usage false", `{"stream":true,"stream_options":{"include_usage":false}}`, RequestInfo{Stream: true, Valid: true}},
	{"include_usage string", `{"stream":true,"stream_options":{"include_usage":"true"}}`, RequestInfo{Stream: true, Valid: true}},
	{"stream_options null", `{"stream":true,"stream_options":null}`, RequestInfo{Stream: true, Valid: true}},
	{"duplicate stream_options", `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}`, RequestInfo{Valid: true, Problem: `duplicate "stream_options" key`}},
	{"duplicate include_usage", `{"stream_options":{"include_usage":false,"include_usage":true}}`, RequestInfo{Valid: true, Problem: `duplicate "stream_options.include_usage" key`}},
	{"not streamed", `{"model":"m"}`, RequestInfo{Model: "m", Valid: true}},
	{"stream false", `{"stream":false}`, RequestInfo{Valid: true}},
	{"stream string", `{"stream":"yes"}`, RequestInfo{Valid: true, Problem: `"stream" is not a boolean`}},
	{"stream number", `{"stream":1}`, RequestInfo{Valid: true, Problem: `"stream" is not a boolean`}},
	{"stream object", `{"model":"m","stream":{}}`, RequestInfo{Valid: true, Problem: `"stream" is not a boolean`}},
	{"stream null", `{"model":"m","stream":null}`, RequestInfo{Model: "m", Valid: true}},
	{"duplicate stream, last false", `{"stream":true,"stream":false}`, RequestInfo{Valid: true, Problem: `duplicate "stream" key`}},
	{"duplicate stream, last true", `{"stream":false,"stream":true}`, RequestInfo{Valid: true, Problem: `duplicate "stream" key`}},
	{"duplicate stream, one escaped", `{"stream":false,"str\u0065am":true}`, RequestInfo{Valid: true, Problem: `duplicate "stream" key`}},
	{"duplicate model", `{"model":"a","model":"b"}`, RequestInfo{Valid: true, Problem: `duplicate "model" key`}},
	{"model number", `{"model":7}`, RequestInfo{Valid: true, Problem: `"model" is not a string`}},
	{"model null", `{"model":null}`, RequestInfo{Valid: true, Problem: `"model" is not a string`}},
	{"model array", `{"model":["a"]}`, RequestInfo{Valid: true, Problem: `"model" is not a string`}},
	{"model escaped", `{"model":"gpt\u002d4o \"x\" \ud83d\ude00 \ud800"}`, RequestInfo{Model: "gpt-4o \"x\" 😀 \uFFFD", Valid: true}},
	{"key escaped", `{"str\u0065am":true,"\u006dodel":"m"}`, RequestInfo{Model: "m", Stream: true, Valid: true}},
	{"key differs in case", `{"Stream":true}`, RequestInfo{Valid: true, Problem: `ambiguous key "Stream" (keys are case-sensitive)`}},
	{"key differs in Unicode case", `{"model":"m","ſtream":true}`, RequestInfo{Valid: true, Problem: `ambiguous key "ſtream" (keys are case-sensitive)`}},
	{"nested key differs in case", `{"stream":true,"stream_options":{"Include_Usage":true}}`, RequestInfo{Valid: true, Problem: `ambiguous key "stream_options.Include_Usage" (keys are case-sensitive)`}},
	{"stream_options string", `{"stream":true,"stream_options":"x"}`, RequestInfo{Valid: true, Problem: `"stream_options" is not an object`}},
	{"stream_options array", `{"stream":true,"stream_options":[]}`, RequestInfo{Valid: true, Problem: `"stream_options" is not an object`}},
	{"stream_options false", `{"stream":true,"stream_options":false}`, RequestInfo{Valid: true, Problem: `"stream_options" is not an object`}},
	{"nested keys ignored", `{"messages":[{"model":"x","stream":true}],"metadata":{"stream":true}}`, RequestInfo{Valid: true}},
	{"white space", " \t\r\n{ \"model\" : \"m\" , \"stream\" : true } \n", RequestInfo{Model: "m", Stream: true, Valid: true}},
	{"empty object", `{}`, RequestInfo{Valid: true}},
	{"every value kind", `{"a":[1,-0.5e+3,0,1E9,true,false,null,"s",{},[]],"b":{"c":{"d":[{}]}}}`, RequestInfo{Valid: true}},
	{"unicode", `{"model":"é😀","messages":[{"content":"日本語"}]}`, RequestInfo{Model: "é😀", Valid: true}},
	{"depth 10000", `{"a":` + nested("[", "]", 9999, "") + `}`, RequestInfo{Valid: true}},

	{"empty", ``, RequestInfo{Problem: "request body is not valid JSON"}},
	{"space", `   `, RequestInfo{Problem: "request body is not valid JSON"}},
	{"open brace", `{`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"array", `[]`, RequestInfo{Problem: "request body is not a JSON object"}},
	{"null", `null`, RequestInfo{Problem: "request body is not a JSON object"}},
	{"string", `"x"`, RequestInfo{Problem: "request body is not a JSON object"}},
	{"number", `1`, RequestInfo{Problem: "request body is not a JSON object"}},
	{"trailing comma", `{"a":1,}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"trailing comma in array", `{"a":[1,]}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"missing colon", `{"a" 1}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"missing value", `{"a":}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"unquoted key", `{a:1}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"single quotes", `{'a':1}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"trailing garbage", `{"stream":true} x`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"two objects", `{}{}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"mismatched close", `{"a":[}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"mismatched close 2", `{"a":{]}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"unterminated string", `{"model":"gpt`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"control byte in string", "{\"model\":\"a\nb\"}", RequestInfo{Problem: "request body is not valid JSON"}},
	{"bad escape", `{"model":"\x"}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"short unicode escape", `{"model":"\u12"}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"invalid UTF-8 in value", "{\"model\":\"\xff\"}", RequestInfo{Problem: "request body is not valid UTF-8"}},
	{"invalid UTF-8 in key", "{\"\xc3\":1}", RequestInfo{Problem: "request body is not valid UTF-8"}},
	{"invalid UTF-8 in long string", "{\"a\":\"" + strings.Repeat("abcdefgh", 10) + "\xed\xa0\x80\"}", RequestInfo{Problem: "request body is not valid UTF-8"}},
	{"invalid UTF-8 bytes", "\xff\xfe", RequestInfo{Problem: "request body is not valid UTF-8"}},
	{"byte order mark", "\xef\xbb\xbf{}", RequestInfo{Problem: "request body is not valid JSON"}},
	{"leading zero", `{"a":01}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"bare fraction", `{"a":.5}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"empty fraction", `{"a":1.}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"empty exponent", `{"a":1e}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"plus sign", `{"a":+1}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"bad literal", `{"a":tru}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"long literal", `{"a":nulll}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"NaN", `{"a":NaN}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"depth 10001", `{"a":` + nested("[", "]", 10000, "") + `}`, RequestInfo{Problem: "request body is not valid JSON"}},
	{"10k deep arrays", nested("[", "]", 10000, ""), RequestInfo{Problem: "request body is not a JSON object"}},
	{"100k unclosed", `{"a":` + strings.Repeat("[", 100000), RequestInfo{Problem: "request body is not valid JSON"}},
	{"100k unclosed objects", strings.Repeat(`{"a":`, 100000), RequestInfo{Problem: "request body is not valid JSON"}},
}

func TestInspectRequest(t *testing.T) {
	for _, tc := range inspectTests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := InspectRequest([]byte(tc.body))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("InspectRequest(%.60q) differs (-want +got):\n%s", tc.body, diff)
			}
			// encoding/json agrees on validity (it accepts invalid UTF-8,
			// which InspectRequest refuses).
			if jv := json.Valid([]byte(tc.body)) && strings.HasPrefix(strings.TrimLeft(tc.body, " \t\r\n"), "{") && !strings.Contains(tc.name, "UTF-8"); jv != got.Valid {
				t.Errorf("InspectRequest(%.60q).Valid = %v, encoding/json says %v", tc.body, got.Valid, jv)
			}
		})
	}
}

func TestInspectRequestLargeImage(t *testing.T) {
	got := InspectRequest(benchRequest())
	if want := (RequestInfo{Model: "gpt-4o", Stream: true, Valid: true, MaxTokens: 300}); got != want {
		t.Errorf("InspectRequest(5 MB body) = %+v, want %+v", got, want)
	}
	body := benchRequest()
	// The decoder's buffer grows by doubling to hold the "messages" value;
	// skipping it allocates nothing per element.
	if a := testing.AllocsPerRun(2, func() { InspectRequest(body) }); a > 200 {
		t.Errorf("InspectRequest(5 MB body) allocates %v times, want at most 200", a)
	}
}

func TestInjectIncludeUsage(t *testing.T) {
	const so = `"stream_options":{"include_usage":true}`
	tests := []struct {
		name   string
		body   string
		want   string
		wantOK bool
	}{
		{"no stream_options", `{"model":"m","stream":true}`, `{` + so + `,"model":"m","stream":true}`, true},
		{"white space kept", " {\n  \"stream\": true\n}\n", " {" + so + ",\n  \"stream\": true\n}\n", true},
		{"stream_options empty", `{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"stream_options empty with space", `{"stream":true,"stream_options":{ }}`, `{"stream":true,"stream_options":{"include_usage":true }}`, true},
		{"stream_options other member", `{"stream":true,"stream_options":{"x":1}}`, `{"stream":true,"stream_options":{"include_usage":true,"x":1}}`, true},
		{"include_usage false", `{"stream_options":{"x":1,"include_usage":false},"stream":true}`, `{"stream_options":{"x":1,"include_usage":true},"stream":true}`, true},
		{"include_usage null", `{"stream":true,"stream_options":{"include_usage" : null }}`, `{"stream":true,"stream_options":{"include_usage" : true }}`, true},
		{"include_usage string", `{"stream":true,"stream_options":{"include_usage":"no"}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"stream_options null", `{"stream":true,"stream_options":null,"n":1}`, `{"stream":true,"stream_options":{"include_usage":true},"n":1}`, true},

		{"already asked", `{"stream":true,"stream_options":{"include_usage":true}}`, "", false},
		{"not a stream", `{"model":"m"}`, "", false},
		{"stream false", `{"stream":false}`, "", false},
		{"stream string", `{"stream":"true"}`, "", false},
		{"duplicate stream", `{"stream":false,"stream":true}`, "", false},
		{"duplicate stream_options", `{"stream":true,"stream_options":{},"stream_options":{}}`, "", false},
		{"duplicate include_usage", `{"stream":true,"stream_options":{"include_usage":false,"include_usage":false}}`, "", false},
		{"stream_options string", `{"stream":true,"stream_options":"x"}`, "", false},
		{"stream_options array", `{"stream":true,"stream_options":[]}`, "", false},
		{"invalid JSON", `{"stream":true,}`, "", false},
		{"array", `[{"stream":true}]`, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tc.body)
			orig := bytes.Clone(in)
			got, ok := InjectIncludeUsage(in)
			if !bytes.Equal(in, orig) {
				t.Fatalf("InjectIncludeUsage modified its input")
			}
			if ok != tc.wantOK {
				t.Fatalf("InjectIncludeUsage(%q) ok = %v, want %v", tc.body, ok, tc.wantOK)
			}
			if !ok {
				if !bytes.Equal(got, in) {
					t.Errorf("InjectIncludeUsage(%q) = %q, false; want the body unchanged", tc.body, got)
				}
				return
			}
			if string(got) != tc.want {
				t.Errorf("InjectIncludeUsage(%q) = %q, want %q", tc.body, got, tc.want)
			}
			checkInjected(t, in, got)
		})
	}
}

// checkInjected checks the promises of InjectIncludeUsage(in) = out, true.
func checkInjected(t *testing.T, in, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("InjectIncludeUsage(%q) = %q: not valid JSON", in, out)
	}
	before, after := InspectRequest(in), InspectRequest(out)
	want := before
	want.IncludeUsage = true
	if after != want {
		t.Fatalf("InspectRequest(InjectIncludeUsage(%q)) = %+v, want %+v", in, after, want)
	}
	// Apart from stream_options, the two bodies decode the same.
	var a, b map[string]json.RawMessage
	if err := json.Unmarshal(in, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	var so map[string]any
	if err := json.Unmarshal(b["stream_options"], &so); err != nil || so["include_usage"] != true {
		t.Fatalf("InjectIncludeUsage(%q): stream_options = %s", in, b["stream_options"])
	}
	if old, ok := a["stream_options"]; ok && string(old) != "null" {
		var oso map[string]any
		if err := json.Unmarshal(old, &oso); err != nil {
			t.Fatal(err)
		}
		oso["include_usage"] = true
		if diff := cmp.Diff(oso, so); diff != "" {
			t.Fatalf("InjectIncludeUsage(%q): stream_options members changed (-want +got):\n%s", in, diff)
		}
	}
	delete(a, "stream_options")
	delete(b, "stream_options")
	if diff := cmp.Diff(a, b, cmp.Transformer("compact", func(r json.RawMessage) string {
		var buf bytes.Buffer
		_ = json.Compact(&buf, r)
		return buf.String()
	})); diff != "" {
		t.Fatalf("InjectIncludeUsage(%q) changed other members (-in +out):\n%s", in, diff)
	}
}

// Model routing rewrites the model and nothing else.
func TestReplaceModel_OnlyTheModelChanges(t *testing.T) {
	for _, tc := range []struct{ in, model, want string }{
		{`{"model":"groq/llama","messages":[]}`, "llama", `{"model":"llama","messages":[]}`},
		{`{ "stream":true , "model" : "a/b" }`, "b", `{ "stream":true , "model" : "b" }`},
		{`{"model":"x/y\u00e9"}`, "y\"é", `{"model":"y\"é"}`},
	} {
		got, ok := ReplaceModel([]byte(tc.in), tc.model)
		if !ok || string(got) != tc.want {
			t.Errorf("ReplaceModel(%s, %q) = %s, %v; want %s", tc.in, tc.model, got, ok, tc.want)
		}
	}
	for _, in := range []string{`{"messages":[]}`, `{"model":1}`, `{"model":"a","model":"b"}`, `[]`} {
		if got, ok := ReplaceModel([]byte(in), "m"); ok || string(got) != in {
			t.Errorf("ReplaceModel(%s) = %s, %v; want it unchanged and false", in, got, ok)
		}
	}
}

// The most output a request asks for, whatever the API calls it.
func TestInspectRequest_MaxTokens(t *testing.T) {
	for body, want := range map[string]int64{
		`{"model":"m","max_tokens":100}`:                         100,
		`{"model":"m","max_completion_tokens":50}`:               50,
		`{"model":"m","max_output_tokens":7}`:                    7,
		`{"model":"m","max_tokens":5,"max_completion_tokens":9}`: 9,
		`{"model":"m","max_tokens":"many"}`:                      0,
		`{"model":"m","max_tokens":-3}`:                          0,
		`{"model":"m","max_tokens":1.5}`:                         0,
		`{"model":"m"}`:                                          0,
	} {
		if got := InspectRequest([]byte(body)); got.MaxTokens != want || got.Problem != "" {
			t.Errorf("InspectRequest(%s) = %+v, want MaxTokens %d", body, got, want)
		}
	}
}
