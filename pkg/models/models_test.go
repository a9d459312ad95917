package models

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// testSource is a Source whose providers a test changes.
type testSource struct {
	mu    sync.Mutex
	provs []aiproxy.Provider
	def   string
}

func (s *testSource) ProvidersWithKeys(context.Context) ([]aiproxy.Provider, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]aiproxy.Provider(nil), s.provs...), nil
}

func (s *testSource) DefaultProvider() string { return s.def }

func (s *testSource) set(provs ...aiproxy.Provider) {
	s.mu.Lock()
	s.provs = provs
	s.mu.Unlock()
}

// lockedBuffer is a log destination shared by the catalog's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// withAfter replaces the timer of the first-fetch wait.
func withAfter(f func(time.Duration) <-chan time.Time) Option {
	return func(c *Catalog) { c.after = f }
}

// upstream is an httptest provider that answers path with body, after
// checking that the key came in header as want; hits counts its requests.
type upstream struct {
	srv  *httptest.Server
	hits atomic.Int64
	body atomic.Value // string
}

func newUpstream(t *testing.T, path, header, want, body string) *upstream {
	t.Helper()
	u := &upstream{}
	u.body.Store(body)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		if got := r.Header.Get(header); got != want {
			http.Error(w, "wrong key "+header+": "+got, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, u.body.Load().(string))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// hanging is an httptest provider that answers only once release is
// closed; entered is closed when its first request arrives.
type hanging struct {
	srv     *httptest.Server
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func newHanging(t *testing.T) *hanging {
	t.Helper()
	h := &hanging{release: make(chan struct{}), entered: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.once.Do(func() { close(h.entered) })
		select {
		case <-h.release:
			fmt.Fprint(w, `{"object":"list","data":[{"id":"slow-1","object":"model","created":5,"owned_by":"slow"}]}`)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
		h.srv.Close()
	})
	return h
}

const (
	openaiList = `{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"o3","object":"model","created":1744225308,"owned_by":"system"}]}`
	groqList   = `{"object":"list","data":[{"id":"llama-3.3-70b-versatile","object":"model","created":1733447754,"owned_by":"Meta","active":true}]}`
	// Anthropic's shape: no object/created/owned_by, created_at instead,
	// with pagination fields.
	anthropicList = `{"data":[{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"}],"has_more":true,"first_id":"claude-sonnet-4-5","last_id":"claude-sonnet-4-5"}`
)

// poll calls cond until it holds, failing the test after a generous
// deadline (a hang, not a timing assertion).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(time.Millisecond) // polling, not synchronisation: cond decides
	}
}

func ids(ms []Model) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func (c *Catalog) firstFetchEnded(host string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[host]
	return e != nil && e.ended
}

// TestCatalog_SlowOrBadProviderNeverDelaysOrBreaksTheList: with a default
// provider, an aliased one, one without alias (Anthropic's shape and
// scheme), one that hangs and one that answers garbage, the merged list
// holds the three good ones (default ids bare, others prefixed) as soon
// as the first-fetch bound passes, while the hanging one still hangs; the
// next request does not wait again and asks no upstream (the cache); the
// garbage is logged and left out; the hanging one joins once it answers.
func TestCatalog_SlowOrBadProviderNeverDelaysOrBreaksTheList(t *testing.T) {
	t.Parallel()
	oai := newUpstream(t, "/v1/models", "Authorization", "Bearer sk-openai", openaiList)
	groq := newUpstream(t, "/openai/v1/models", "Authorization", "Bearer gsk-groq", groqList)
	ant := newUpstream(t, "/v1/models", "X-Api-Key", "sk-ant", anthropicList)
	bad := newUpstream(t, "/v1/models", "Authorization", "Bearer bad", `<html>not json</html>`)
	slow := newHanging(t)

	src := &testSource{def: "api.openai.com"}
	src.set(
		aiproxy.Provider{Host: "api.openai.com", BaseURL: oai.srv.URL, APIRoot: "/v1", Auth: aiproxy.AuthBearer, Keys: []string{"sk-openai"}},
		aiproxy.Provider{Host: "api.groq.com", Alias: "groq", BaseURL: groq.srv.URL, APIRoot: "/openai/v1", Auth: aiproxy.AuthBearer, Keys: []string{"gsk-groq"}},
		aiproxy.Provider{Host: "api.anthropic.com", BaseURL: ant.srv.URL, APIRoot: "/v1", Auth: aiproxy.AuthXAPIKey, Keys: []string{"sk-ant"}},
		aiproxy.Provider{Host: "garbage.example", BaseURL: bad.srv.URL, APIRoot: "/v1", Keys: []string{"bad"}},
		aiproxy.Provider{Host: "slow.example", Alias: "slow", BaseURL: slow.srv.URL, APIRoot: "/v1", Keys: []string{"sk-slow"}},
	)
	timers := make(chan time.Duration, 10)
	fire := make(chan time.Time)
	var logs lockedBuffer
	c := New(src, nil, slog.New(slog.NewTextHandler(&logs, nil)), WithInterval(time.Hour),
		withAfter(func(d time.Duration) <-chan time.Time { timers <- d; return fire }))
	t.Cleanup(c.Close)

	got := make(chan []Model, 1)
	go func() { got <- c.List(t.Context(), nil) }()
	if d := <-timers; d <= 0 || d > DefaultFirstWait {
		t.Errorf("first List waits %v for the pending fetches, want at most %v", d, DefaultFirstWait)
	}
	<-slow.entered
	for _, h := range []string{"api.openai.com", "api.groq.com", "api.anthropic.com", "garbage.example"} {
		poll(t, h+"'s first fetch", func() bool { return c.firstFetchEnded(h) })
	}
	select {
	case m := <-got:
		t.Fatalf("List answered %v before the wait ended or the slow provider answered", ids(m))
	default:
	}
	close(fire) // the first-fetch bound passes; slow.example still hangs
	want := []string{"gpt-4o", "o3", "api.anthropic.com/claude-sonnet-4-5", "groq/llama-3.3-70b-versatile"}
	first := <-got
	if diff := cmp.Diff(want, ids(first)); diff != "" {
		t.Errorf("List() ids mismatch (-want +got):\n%s", diff)
	}
	wantModel := Model{ID: "api.anthropic.com/claude-sonnet-4-5", Object: "model", Created: 1759104000,
		OwnedBy: "api.anthropic.com", Provider: "", Upstream: "claude-sonnet-4-5"}
	if m, ok := c.Get(t.Context(), "api.anthropic.com/claude-sonnet-4-5", nil); !ok {
		t.Errorf("Get(anthropic model) not found")
	} else if diff := cmp.Diff(wantModel, m, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Provider" }, cmp.Ignore())); diff != "" {
		t.Errorf("Get(anthropic model) mismatch (-want +got):\n%s", diff)
	}

	// From the cache: no wait, no upstream request.
	before := oai.hits.Load() + groq.hits.Load() + ant.hits.Load() + bad.hits.Load()
	if diff := cmp.Diff(want, ids(c.List(t.Context(), nil))); diff != "" {
		t.Errorf("second List() ids mismatch (-want +got):\n%s", diff)
	}
	select {
	case d := <-timers:
		t.Errorf("second List waited again (%v) for a provider already waited for", d)
	default:
	}
	if after := oai.hits.Load() + groq.hits.Load() + ant.hits.Load() + bad.hits.Load(); after != before {
		t.Errorf("second List made %d upstream requests, want 0 (served from the cache)", after-before)
	}
	if l := logs.String(); !strings.Contains(l, "model list left out") || !strings.Contains(l, "garbage.example") {
		t.Errorf("log does not name the provider whose answer was garbage:\n%s", l)
	}
	if strings.Contains(logs.String(), "sk-openai") || strings.Contains(logs.String(), "gsk-groq") {
		t.Errorf("log holds a provider key:\n%s", logs.String())
	}

	close(slow.release)
	poll(t, "the slow provider's models in the list", func() bool {
		_, ok := c.Get(t.Context(), "slow/slow-1", nil)
		return ok
	})
}

// TestCatalog_RefreshesInBackground: a provider's new model appears without
// a request asking, at the next refresh; a removed provider's models
// disappear at the next request; an alias change renames the prefix.
func TestCatalog_RefreshesInBackground(t *testing.T) {
	t.Parallel()
	oai := newUpstream(t, "/v1/models", "Authorization", "Bearer k", `{"data":[{"id":"a"}]}`)
	other := newUpstream(t, "/v1/models", "Authorization", "Bearer k", `{"data":[{"id":"b"}]}`)
	src := &testSource{def: "api.openai.com"}
	src.set(
		aiproxy.Provider{Host: "api.openai.com", BaseURL: oai.srv.URL, APIRoot: "/v1", Keys: []string{"k"}},
		aiproxy.Provider{Host: "other.example", BaseURL: other.srv.URL, APIRoot: "/v1", Keys: []string{"k"}},
	)
	c := New(src, nil, nil, WithInterval(5*time.Millisecond))
	t.Cleanup(c.Close)
	if diff := cmp.Diff([]string{"a", "other.example/b"}, ids(c.List(t.Context(), nil))); diff != "" {
		t.Errorf("List() mismatch (-want +got):\n%s", diff)
	}
	oai.body.Store(`{"data":[{"id":"a"},{"id":"a2"}]}`)
	poll(t, "the refreshed list", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		e := c.entries["api.openai.com"]
		return e != nil && len(e.models) == 2
	})
	src.set(aiproxy.Provider{Host: "api.openai.com", BaseURL: oai.srv.URL, APIRoot: "/v1", Keys: []string{"k"}},
		aiproxy.Provider{Host: "other.example", Alias: "o", BaseURL: other.srv.URL, APIRoot: "/v1", Keys: []string{"k"}})
	if diff := cmp.Diff([]string{"a", "a2", "o/b"}, ids(c.List(t.Context(), nil))); diff != "" {
		t.Errorf("List() after an alias change mismatch (-want +got):\n%s", diff)
	}
	src.set(aiproxy.Provider{Host: "api.openai.com", BaseURL: oai.srv.URL, APIRoot: "/v1", Keys: []string{"k"}})
	if diff := cmp.Diff([]string{"a", "a2"}, ids(c.List(t.Context(), nil))); diff != "" {
		t.Errorf("List() after a provider was removed mismatch (-want +got):\n%s", diff)
	}
}

// TestCatalog_RefusedKeyTriesTheNext: a key the provider refuses (401)
// does not hide its list when another key works.
func TestCatalog_RefusedKeyTriesTheNext(t *testing.T) {
	t.Parallel()
	u := newUpstream(t, "/v1/models", "Authorization", "Bearer good", `{"data":[{"id":"m"}]}`)
	src := &testSource{def: "p.example"}
	src.set(aiproxy.Provider{Host: "p.example", BaseURL: u.srv.URL, APIRoot: "/v1", Keys: []string{"revoked", "good"}})
	c := New(src, nil, nil, WithInterval(time.Hour))
	t.Cleanup(c.Close)
	if diff := cmp.Diff([]string{"m"}, ids(c.List(t.Context(), nil))); diff != "" {
		t.Errorf("List() mismatch (-want +got):\n%s", diff)
	}
}

// TestCatalog_PinnedHeadersAndAzureScheme: the /models request carries the
// provider's pinned headers and its key in api-key.
func TestCatalog_PinnedHeadersAndAzureScheme(t *testing.T) {
	t.Parallel()
	var project atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		project.Store(r.Header.Get("OpenAI-Project"))
		if r.Header.Get("Api-Key") != "az" || r.Header.Get("Authorization") != "" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"gpt-4o-mini"}]}`)
	}))
	t.Cleanup(srv.Close)
	src := &testSource{def: "api.openai.com"}
	src.set(aiproxy.Provider{Host: "x.openai.azure.com", Alias: "azure", BaseURL: srv.URL, APIRoot: "/openai/v1",
		Auth: aiproxy.AuthAPIKey, Headers: map[string]string{"Openai-Project": "proj_1"}, Keys: []string{"az"}})
	c := New(src, nil, nil, WithInterval(time.Hour))
	t.Cleanup(c.Close)
	if diff := cmp.Diff([]string{"azure/gpt-4o-mini"}, ids(c.List(t.Context(), nil))); diff != "" {
		t.Errorf("List() mismatch (-want +got):\n%s", diff)
	}
	if got, _ := project.Load().(string); got != "proj_1" {
		t.Errorf("OpenAI-Project sent = %q, want proj_1", got)
	}
}

// TestCatalog_AllowedFilterAndServeOne: allowed filters List and Get;
// ServeOne answers a model in OpenAI's shape, and 404 not_found for an
// unknown or a refused one.
func TestCatalog_AllowedFilterAndServeOne(t *testing.T) {
	t.Parallel()
	oai := newUpstream(t, "/v1/models", "Authorization", "Bearer k", openaiList)
	groq := newUpstream(t, "/openai/v1/models", "Authorization", "Bearer k", groqList)
	src := &testSource{def: "api.openai.com"}
	src.set(aiproxy.Provider{Host: "api.openai.com", BaseURL: oai.srv.URL, APIRoot: "/v1", Keys: []string{"k"}},
		aiproxy.Provider{Host: "api.groq.com", Alias: "groq", BaseURL: groq.srv.URL, APIRoot: "/openai/v1", Keys: []string{"k"}})
	c := New(src, nil, nil, WithInterval(time.Hour))
	t.Cleanup(c.Close)
	onlyGroq := func(id string) bool { return strings.HasPrefix(id, "groq/") }
	if diff := cmp.Diff([]string{"groq/llama-3.3-70b-versatile"}, ids(c.List(t.Context(), onlyGroq))); diff != "" {
		t.Errorf("List(allowed) mismatch (-want +got):\n%s", diff)
	}
	tests := []struct {
		name, id   string
		allowed    func(string) bool
		status     int
		wantFields string
	}{
		{"default model", "gpt-4o", nil, 200, `{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}`},
		{"prefixed model", "groq/llama-3.3-70b-versatile", nil, 200, `{"id":"groq/llama-3.3-70b-versatile","object":"model","created":1733447754,"owned_by":"Meta"}`},
		{"unknown model", "gpt-9", nil, 404, `{"error":{"message":"model \"gpt-9\" not found","type":"invalid_request_error","code":"not_found"}}`},
		{"refused model", "gpt-4o", onlyGroq, 404, `{"error":{"message":"model \"gpt-4o\" not found","type":"invalid_request_error","code":"not_found"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			c.ServeOne(w, httptest.NewRequest("GET", "/v1/models/"+tc.id, nil), tc.id, tc.allowed)
			if w.Code != tc.status {
				t.Errorf("ServeOne(%q) status = %d, want %d", tc.id, w.Code, tc.status)
			}
			var got, want bytes.Buffer
			json.Compact(&got, w.Body.Bytes())
			json.Compact(&want, []byte(tc.wantFields))
			if diff := cmp.Diff(want.String(), got.String()); diff != "" {
				t.Errorf("ServeOne(%q) body mismatch (-want +got):\n%s", tc.id, diff)
			}
		})
	}
	w := httptest.NewRecorder()
	c.ServeList(w, httptest.NewRequest("GET", "/v1/models", nil), onlyGroq)
	want := `{"object":"list","data":[{"id":"groq/llama-3.3-70b-versatile","object":"model","created":1733447754,"owned_by":"Meta"}]}` + "\n"
	if diff := cmp.Diff(want, w.Body.String()); diff != "" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("ServeList() body mismatch (-want +got):\n%s\nContent-Type %q", diff, w.Header().Get("Content-Type"))
	}
}

// TestParseList: the shapes a provider may answer, and the ones left out.
func TestParseList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want []string // nil: errNotAList
	}{
		{"openai", openaiList, []string{"gpt-4o", "o3"}},
		{"anthropic first page", anthropicList, []string{"claude-sonnet-4-5"}},
		{"empty list", `{"object":"list","data":[]}`, []string{}},
		{"ids with control bytes or empty are skipped", `{"data":[{"id":""},{"id":"a\nb"},{"id":"ok"}]}`, []string{"ok"}},
		{"html", `<html></html>`, nil},
		{"array", `[{"id":"a"}]`, nil},
		{"no data", `{"object":"list"}`, nil},
		{"null data", `{"data":null}`, nil},
		{"data not an array", `{"data":"gpt-4o"}`, nil},
		{"id not a string", `{"data":[{"id":4}]}`, nil},
		{"item without id", `{"data":[{"name":"gpt-4o"}]}`, nil},
		{"trailing garbage", `{"data":[]} {"data":[]}`, nil},
		{"error object", `{"error":{"message":"Invalid API key"}}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseList([]byte(tc.body), "owner")
			if tc.want == nil {
				if err == nil {
					t.Errorf("parseList(%s) = %v, want an error", tc.body, ids(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("parseList(%s) error = %v", tc.body, err)
			}
			if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
				t.Errorf("parseList(%s) mismatch (-want +got):\n%s", tc.body, diff)
			}
		})
	}
}

// TestCatalog_CloseStopsFetches: Close returns while a provider hangs: it
// cancels the fetch in flight and stops the refresher.
func TestCatalog_CloseStopsFetches(t *testing.T) {
	t.Parallel()
	slow := newHanging(t)
	src := &testSource{def: "slow.example"}
	src.set(aiproxy.Provider{Host: "slow.example", BaseURL: slow.srv.URL, APIRoot: "/v1", Keys: []string{"k"}})
	c := New(src, nil, nil, WithInterval(time.Hour), WithFirstWait(time.Millisecond))
	c.List(context.Background(), nil) // starts the fetches
	<-slow.entered
	c.Close() // returns only when every goroutine has ended
	if got := c.List(context.Background(), nil); len(got) != 0 {
		t.Errorf("List() after Close = %v, want empty", ids(got))
	}
}
