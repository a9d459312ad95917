package models

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// BenchmarkList_TenProvidersCached is GET /v1/models's work from the cache:
// ten providers of 50 models each, one of them hanging (its first-fetch
// wait long over), merged and filtered. No upstream request happens
// inside the loop. ServeList adds the JSON encoding.
func BenchmarkList_TenProvidersCached(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"object":"list","data":[`)
	for i := range 50 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"id":"model-%02d","object":"model","created":1700000000,"owned_by":"x"}`, i)
	}
	sb.WriteString(`]}`)
	body := sb.String()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
	defer ok.Close()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)

	src := &testSource{def: "p0.example"}
	var provs []aiproxy.Provider
	for i := range 10 {
		p := aiproxy.Provider{Host: fmt.Sprintf("p%d.example", i), Alias: fmt.Sprintf("p%d", i), BaseURL: ok.URL, APIRoot: "/v1", Keys: []string{"k"}}
		if i == 9 {
			p.BaseURL = hang.URL
		}
		provs = append(provs, p)
	}
	src.set(provs...)
	c := New(src, nil, nil, WithInterval(time.Hour), WithFirstWait(time.Millisecond))
	defer c.Close()
	ctx := context.Background()
	c.List(ctx, nil) // starts the refresher, which is lazy
	for i := range 9 {
		for deadline := time.Now().Add(20 * time.Second); !c.firstFetchEnded(provs[i].Host); {
			if time.Now().After(deadline) {
				b.Fatalf("%s: first fetch did not end", provs[i].Host)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if n := len(c.List(ctx, nil)); n != 9*50 {
		b.Fatalf("List() = %d models, want %d", n, 9*50)
	}
	b.Run("List", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.List(ctx, nil)
		}
	})
	b.Run("List allowed", func(b *testing.B) {
		allowed := func(id string) bool { return !strings.HasPrefix(id, "p3/") }
		b.ReportAllocs()
		for b.Loop() {
			c.List(ctx, allowed)
		}
	})
	b.Run("ServeList", func(b *testing.B) {
		r := httptest.NewRequest("GET", "/v1/models", nil)
		b.ReportAllocs()
		for b.Loop() {
			c.ServeList(httptest.NewRecorder(), r, nil)
		}
	})
}
