package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// countWriter counts the bytes written to it: the log's cost on disk.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkUnauthenticated is what a request without a key costs the
// server: CPU per request, and bytes of log (nothing else reaches the
// disk: a refused request is not usage). Neither may grow with the size of
// the path or body the client sends.
func BenchmarkUnauthenticated(b *testing.B) {
	db, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "aiproxy.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	svc := admin.New(db)
	logs := &countWriter{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	px := proxy.New(svc, nil, log, proxy.Config{})
	srv := server.New(svc, px, log, server.Config{})
	for _, size := range []int{16, 64 << 10} {
		b.Run(fmt.Sprintf("path=%dB", size), func(b *testing.B) {
			req := httptest.NewRequest("POST", "/v1/chat/"+strings.Repeat("p", size), strings.NewReader(strings.Repeat("b", size)))
			req.Header.Set("Authorization", "Bearer sk-cfwnotakey")
			w := &discard{h: http.Header{}}
			logs.n = 0
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				srv.ServeHTTP(w, req)
				if w.status != http.StatusUnauthorized {
					b.Fatalf("status %d", w.status)
				}
			}
			b.ReportMetric(float64(logs.n)/float64(b.N), "log-B/op")
		})
	}
}

type discard struct {
	h      http.Header
	status int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(code int)        { d.status = code }
func (d *discard) Write(p []byte) (int, error) { return io.Discard.Write(p) }
