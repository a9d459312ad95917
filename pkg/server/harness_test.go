package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/models"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/storetest"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// harness is one aiproxy in front of one fake upstream, on loopback, over a
// real database file.
type harness struct {
	t        testing.TB
	db       *store.DB
	svc      *admin.Service
	rec      *usage.Recorder
	fake     *fakeai.Server
	upstream *httptest.Server
	proxy    *httptest.Server
	logs     *syncBuffer
	inflight sync.WaitGroup // requests still in the handler
	key      string         // a user key for "alice"
}

type harnessOpts struct {
	proxy  proxy.Config
	server server.Config
	// catalog serves GET /v1/models from every provider (pkg/models).
	catalog bool
	// limits enforces per-user limits and prices usage, as serve does.
	limits bool
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, storetest.NewFile(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, svc: admin.New(db), fake: fakeai.New(), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.upstream = httptest.NewServer(h.fake)
	h.rec = usage.New(h.svc.RecordUsage, log, 1000)
	if o.catalog {
		def := o.proxy.DefaultProvider
		if def == "" {
			def = "api.openai.com"
		}
		c := models.New(models.SourceOf(h.svc.ProvidersWithKeys, def), http.DefaultClient, log)
		t.Cleanup(c.Close)
		o.proxy.Models = c
	}
	if o.proxy.KeyStates == nil {
		o.proxy.KeyStates = h.svc
	}
	if o.limits {
		lim, err := limits.New(ctx, db, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := h.svc.PriceTable(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o.proxy.Limits, o.proxy.Prices = lim, tab
	}
	px := proxy.New(h.svc, h.rec, log, o.proxy)
	srv := server.New(h.svc, px, log, o.server)
	// Count requests in the handler, so flushUsage can wait for them as
	// serve's drain does before it closes the recorder.
	h.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.inflight.Add(1)
		defer h.inflight.Done()
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		h.proxy.CloseClientConnections()
		h.proxy.Close()
		h.upstream.CloseClientConnections()
		h.upstream.Close()
		px.CloseIdle()
		h.rec.Close(context.Background())
		db.Close()
	})
	h.addProvider("api.openai.com", "sk-upstream-openai-1", h.upstream.URL)
	h.key = h.createUser("alice")
	return h
}

func (h *harness) createUser(name string) string {
	h.t.Helper()
	key, err := h.svc.CreateUser(context.Background(), name, admin.Expiry{})
	if err != nil {
		h.t.Fatal(err)
	}
	return key
}

func (h *harness) addProvider(host, key, baseURL string) {
	h.t.Helper()
	if err := h.svc.AddProviderKey(context.Background(), admin.ProviderKey{Host: host, Key: key, BaseURL: baseURL}); err != nil {
		h.t.Fatal(err)
	}
}

// do sends a request to the proxy with the given headers; a nil body
// sends none.
func (h *harness) do(method, path string, body string, hdr map[string]string) *http.Response {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.proxy.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// usage flushes the recorder and returns every stored usage row's totals
// per user.
func (h *harness) flushUsage() {
	h.inflight.Wait()
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.rec.Close(ctx); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) stats(by string) []aiproxy.StatsRow {
	h.t.Helper()
	rows, err := h.svc.Stats(context.Background(), admin.StatsQuery{By: by})
	if err != nil {
		h.t.Fatal(err)
	}
	return rows
}

func readAll(t testing.TB, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say this is a test"}]}`
const streamBody = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
