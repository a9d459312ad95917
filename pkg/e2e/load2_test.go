//go:build unix

package e2e_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
)

// TestLOAD2_UpstreamConnectionReuse: 1000 sequential requests reach the
// upstream over at most 10 TCP connections: aiproxy keeps its upstream
// connections alive and reuses them (RELIABILITY.md LOAD-2).
func TestLOAD2_UpstreamConnectionReuse(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other untimed tests (main_test.go)
	e := newEnv(t)
	key := e.createUser("alice")
	var mu sync.Mutex
	ports := map[string]int{}
	conns := 0
	fake := fakeai.New()
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, port, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		ports[port]++
		mu.Unlock()
		fake.ServeHTTP(w, r)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	up.Start()
	t.Cleanup(func() {
		up.CloseClientConnections()
		up.Close()
	})
	e.mustCLI("provider", "add", "count.test", "sk-count-secret", "--base-url", up.URL)
	srv := e.serve()

	const n = 1000
	for i := range n {
		r, err := send(t.Context(), "POST", "http://"+srv.addr+"/v1/chat/completions",
			`{"model":"gpt-fake","messages":[]}`,
			map[string]string{"Authorization": "Bearer " + key, "X-Host-Final": "count.test", "X-Fake-Mode": "ok"})
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d = %d %q, %v; want 200", i, r.status, r.body, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("LOAD-2: %d sequential requests reached the upstream from %d client ports over %d connections", n, len(ports), conns)
	if len(ports) > 10 {
		t.Errorf("the upstream saw %d distinct client ports for %d sequential requests, want ≤ 10", len(ports), n)
	}
	if sum := func() (s int) {
		for _, c := range ports {
			s += c
		}
		return
	}(); sum != n {
		t.Errorf("the upstream saw %d requests, want %d", sum, n)
	}
}
