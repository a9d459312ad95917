package models

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// TestCatalog_OpenAISDKListsAndGetsModels: the official openai-go SDK's
// Models.List (what Open WebUI, LibreChat and LobeChat do through their
// SDKs) reads the merged list from ServeList, and Models.Get a prefixed id
// (its "/" path-escaped by the SDK) from ServeOne.
func TestCatalog_OpenAISDKListsAndGetsModels(t *testing.T) {
	t.Parallel()
	oai := newUpstream(t, "/v1/models", "Authorization", "Bearer sk-openai", openaiList)
	groq := newUpstream(t, "/openai/v1/models", "Authorization", "Bearer gsk", groqList)
	src := &testSource{def: "api.openai.com"}
	src.set(aiproxy.Provider{Host: "api.openai.com", BaseURL: oai.srv.URL, APIRoot: "/v1", Keys: []string{"sk-openai"}},
		aiproxy.Provider{Host: "api.groq.com", Alias: "groq", BaseURL: groq.srv.URL, APIRoot: "/openai/v1", Keys: []string{"gsk"}})
	c := New(src, nil, nil, WithInterval(time.Hour))
	t.Cleanup(c.Close)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) { c.ServeList(w, r, nil) })
	mux.HandleFunc("GET /v1/models/{id...}", func(w http.ResponseWriter, r *http.Request) {
		c.ServeOne(w, r, r.PathValue("id"), nil)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("sk-cfw-test"), option.WithMaxRetries(0))
	page, err := client.Models.List(t.Context())
	if err != nil {
		t.Fatalf("Models.List() error = %v", err)
	}
	var got []string
	for _, m := range page.Data {
		got = append(got, m.ID)
		if m.OwnedBy == "" || m.Created == 0 || m.Object != "model" {
			t.Errorf("model %s = %+v: want object, created and owned_by", m.ID, m)
		}
	}
	if diff := cmp.Diff([]string{"gpt-4o", "o3", "groq/llama-3.3-70b-versatile"}, got); diff != "" {
		t.Errorf("Models.List() ids mismatch (-want +got):\n%s", diff)
	}
	var paged []string
	iter := client.Models.ListAutoPaging(t.Context())
	for iter.Next() {
		paged = append(paged, iter.Current().ID)
	}
	if err := iter.Err(); err != nil || len(paged) != 3 {
		t.Errorf("Models.ListAutoPaging() = %v, %v; want the 3 models once", paged, err)
	}
	m, err := client.Models.Get(t.Context(), "groq/llama-3.3-70b-versatile")
	if err != nil || m.ID != "groq/llama-3.3-70b-versatile" || m.OwnedBy != "Meta" {
		t.Errorf("Models.Get(groq/llama-3.3-70b-versatile) = %+v, %v", m, err)
	}
	if _, err := client.Models.Get(t.Context(), "nope"); err == nil {
		t.Errorf("Models.Get(nope) error = nil, want a 404")
	} else if apiErr, ok := err.(*openai.Error); !ok || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "not_found" {
		t.Errorf("Models.Get(nope) error = %v, want 404 not_found", err)
	}
}
