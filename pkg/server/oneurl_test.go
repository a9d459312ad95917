package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// recordingUpstream records the path, auth headers and body of each request
// and answers a chat completion.
type recordingUpstream struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Path   string
	Header http.Header
	Body   string
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.reqs = append(u.reqs, recorded{r.URL.EscapedPath(), r.Header.Clone(), string(b)})
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"model":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`)
}

func (u *recordingUpstream) last(t *testing.T) recorded {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream saw no request")
	}
	return u.reqs[len(u.reqs)-1]
}

func addAliased(t *testing.T, h *harness, host, alias, apiRoot, auth, key string, up http.Handler) {
	t.Helper()
	srv := upstreamFunc(t, h, "placeholder-"+alias+".example", "sk-placeholder-"+alias+"-0001", up.ServeHTTP)
	if err := h.svc.AddProviderKey(context.Background(), admin.ProviderKey{Host: host, Key: key, BaseURL: srv.URL, Alias: alias, APIRoot: apiRoot, Auth: auth}); err != nil {
		t.Fatal(err)
	}
}

// A model named ALIAS/MODEL reaches that provider as MODEL, under its API
// root, in its auth scheme; a model with a native "/" that names no
// provider goes unchanged to the default provider.
func TestModelRouting_PrefixPicksProvider(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	groq := &recordingUpstream{}
	addAliased(t, h, "api.groq.com", "groq", "/openai/v1", "", "sk-upstream-groq-000001", groq)
	res := h.do("POST", "/v1/chat/completions", `{"model":"groq/llama-3.3-70b-versatile","messages":[]}`, bearer(h.key))
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	got := groq.last(t)
	if got.Path != "/openai/v1/chat/completions" || got.Header.Get("Authorization") != "Bearer sk-upstream-groq-000001" {
		t.Errorf("groq saw %s %q", got.Path, got.Header.Get("Authorization"))
	}
	var body struct{ Model string }
	json.Unmarshal([]byte(got.Body), &body)
	if body.Model != "llama-3.3-70b-versatile" {
		t.Errorf("groq saw model %q", body.Model)
	}
	// A native slash: the default provider, unchanged.
	before := h.fake.Count()
	res = h.do("POST", "/v1/chat/completions", `{"model":"meta-llama/Llama-3-8b","messages":[]}`, bearer(h.key))
	readAll(t, res)
	reqs := h.fake.Requests()
	if len(reqs) != before+1 || !strings.Contains(string(reqs[len(reqs)-1].Body), `"meta-llama/Llama-3-8b"`) {
		t.Errorf("native-slash model did not reach the default provider unchanged")
	}
	// A request that names its provider keeps its path and model.
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "groq"
	res = h.do("POST", "/openai/v1/chat/completions", `{"model":"groq/x","messages":[]}`, hdr)
	readAll(t, res)
	if got := groq.last(t); got.Path != "/openai/v1/chat/completions" || !strings.Contains(got.Body, `"groq/x"`) {
		t.Errorf("named provider: %s %s", got.Path, got.Body)
	}
}

// A routed stream is asked for usage in the body routing rewrote: the
// model replaced and stream_options added, every other byte as sent.
func TestModelRouting_StreamAsksForUsage(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	groq := &recordingUpstream{}
	addAliased(t, h, "api.groq.com", "groq", "/openai/v1", "", "sk-upstream-groq-000001", groq)
	res := h.do("POST", "/v1/chat/completions", `{"model":"groq/llama-3.3-70b-versatile", "stream":true,"stream_options":{"include_usage":false},"messages":[]}`, bearer(h.key))
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	const want = `{"model":"llama-3.3-70b-versatile", "stream":true,"stream_options":{"include_usage":true},"messages":[]}`
	if got := groq.last(t).Body; got != want {
		t.Errorf("groq saw %s\nwant      %s", got, want)
	}
}

// An alias works wherever a host does: X-Host-Final and the first path
// segment; the usage row names the canonical host.
func TestAlias_InHeaderAndPath(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	up := &recordingUpstream{}
	addAliased(t, h, "api.anthropic.com", "claude", "", "", "sk-upstream-anthropic-0001", up)
	res := h.do("POST", "/claude/v1/messages", `{"model":"claude-x","max_tokens":5,"messages":[]}`, map[string]string{"X-Api-Key": h.key})
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	got := up.last(t)
	if got.Path != "/v1/messages" || got.Header.Get("X-Api-Key") != "sk-upstream-anthropic-0001" || got.Header.Get("Authorization") != "" {
		t.Errorf("anthropic saw %s x-api-key=%q authorization=%q", got.Path, got.Header.Get("X-Api-Key"), got.Header.Get("Authorization"))
	}
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "CLAUDE"
	res = h.do("POST", "/v1/messages", `{"model":"claude-x","max_tokens":5,"messages":[]}`, hdr)
	readAll(t, res)
	h.flushUsage()
	for _, r := range h.stats("provider") {
		if r.Key != "api.anthropic.com" {
			t.Errorf("usage recorded under %q", r.Key)
		}
	}
}

// A streamed Responses API request is counted from response.completed's
// usage, and aiproxy injects nothing into it (issue 12 item 4).
func TestResponsesStream_Counted(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var got string
	upstreamFunc(t, h, "responses.example", "sk-upstream-responses-01", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = string(b)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: response.created\n"+
			`data: {"type":"response.created","response":{"id":"resp_1","model":"gpt-4.1","usage":null}}`+"\n\n"+
			"event: response.output_text.delta\n"+
			`data: {"type":"response.output_text.delta","delta":"Hi"}`+"\n\n"+
			"event: response.completed\n"+
			`data: {"type":"response.completed","response":{"id":"resp_1","model":"gpt-4.1","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":4},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":10},"total_tokens":123}}}`+"\n\n")
	})
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "responses.example"
	const body = `{"model":"gpt-4.1","input":"hi","stream":true}`
	res := h.do("POST", "/v1/responses", body, hdr)
	if b := readAll(t, res); res.StatusCode != 200 || !strings.Contains(b, "response.completed") {
		t.Fatalf("%d %s", res.StatusCode, b)
	}
	if got != body {
		t.Errorf("upstream got %s, want the body unchanged", got)
	}
	h.flushUsage()
	rows := h.stats("")
	if len(rows) != 1 || rows[0].PromptTokens != 36 || rows[0].CompletionTokens != 87 || rows[0].TotalTokens != 123 {
		t.Errorf("usage = %+v", rows)
	}
}

// genReader yields n bytes without holding them.
type genReader struct{ n int }

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), g.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	g.n -= k
	return k, nil
}

// A 25 MB multipart upload streams through: the proxy allocates far less
// than the file, the model is read from the form field before the file,
// and usage is recorded from the answer.
func TestMultipart_StreamsThroughWithModel(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var received int64
	upstreamFunc(t, h, "audio.example", "sk-upstream-audio-000001", func(w http.ResponseWriter, r *http.Request) {
		received, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"hello","usage":{"type":"tokens","input_tokens":40,"output_tokens":2,"total_tokens":42}}`)
	})
	const size = 25 << 20
	head := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n"
	tail := "\r\n--b--\r\n"
	body := io.MultiReader(strings.NewReader(head), &genReader{n: size}, strings.NewReader(tail))
	req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/audio/transcriptions", body)
	req.ContentLength = int64(len(head) + size + len(tail))
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("X-Host-Final", "audio.example")
	req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	runtime.ReadMemStats(&after)
	if res.StatusCode != 200 || received != req.ContentLength {
		t.Fatalf("status %d, upstream received %d of %d bytes", res.StatusCode, received, req.ContentLength)
	}
	// Client, proxy and upstream share this process: all three together
	// allocate a fraction of the file.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > size/4 {
		t.Errorf("allocated %d MB while streaming a %d MB file", grew>>20, size>>20)
	}
	h.flushUsage()
	rows := h.stats("model")
	if len(rows) != 1 || rows[0].Key != "gpt-4o-transcribe" || rows[0].TotalTokens != 42 {
		t.Errorf("usage by model = %+v", rows)
	}
}

// GET /v1/models with no provider named answers every provider's models,
// the default provider's as they are and the others' as ALIAS/MODEL, only
// for a valid key; naming a provider still reaches it.
func TestModels_MergedThroughProxy(t *testing.T) {
	models := func(ids ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			var data []string
			for _, id := range ids {
				data = append(data, `{"id":"`+id+`","object":"model","created":1,"owned_by":"x"}`)
			}
			io.WriteString(w, `{"object":"list","data":[`+strings.Join(data, ",")+`]}`)
		}
	}
	h := newHarness(t, harnessOpts{catalog: true, proxy: proxy.Config{DefaultProvider: "default.example"}})
	upstreamFunc(t, h, "default.example", "sk-upstream-default-0001", models("gpt-4o"))
	groq := upstreamFunc(t, h, "groq-placeholder.example", "sk-upstream-groqp-00001", models("llama-3.3-70b"))
	if err := h.svc.AddProviderKey(context.Background(), admin.ProviderKey{Host: "api.groq.com", Key: "sk-upstream-groq-00002", BaseURL: groq.URL, Alias: "groq", APIRoot: "/v1"}); err != nil {
		t.Fatal(err)
	}
	h2 := h
	res := h2.do("GET", "/v1/models", "", bearer(h.key))
	body := readAll(t, res)
	if res.StatusCode != 200 || !strings.Contains(body, `"gpt-4o"`) || !strings.Contains(body, `"groq/llama-3.3-70b"`) {
		t.Errorf("merged list: %d %s", res.StatusCode, body)
	}
	res = h2.do("GET", "/v1/models/groq%2Fllama-3.3-70b", "", bearer(h.key))
	if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, `"groq/llama-3.3-70b"`) {
		t.Errorf("one model: %d %s", res.StatusCode, body)
	}
	res = h2.do("GET", "/v1/models", "", nil)
	if readAll(t, res); res.StatusCode != 401 {
		t.Errorf("no key: %d", res.StatusCode)
	}
	hdr := bearer(h.key)
	hdr["X-Host-Final"] = "groq"
	res = h2.do("GET", "/v1/models", "", hdr)
	if body := readAll(t, res); res.StatusCode != 200 || strings.Contains(body, "gpt-4o") {
		t.Errorf("named provider: %d %s", res.StatusCode, body)
	}
}
