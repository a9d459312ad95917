package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
)

// lockedBuffer collects a server's log while it runs.
type lockedBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	line chan string
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{line: make(chan string, 1000)} }

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range strings.SplitAfter(string(p), "\n") {
		if s != "" {
			select {
			case l.line <- s:
			default:
			}
		}
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runCLI runs one command in-process and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Execute(context.Background(), args, Streams{In: strings.NewReader(""), Out: &out, Err: &errb})
	return out.String(), errb.String(), code
}

// startServe runs `aiproxy serve` in-process on a free loopback port and
// returns its address, its log, a stop function and a channel with its
// exit code.
func startServe(t *testing.T, dbPath string, extra ...string) (addr string, logs *lockedBuffer, stop context.CancelFunc, exit chan int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = newLockedBuffer()
	exit = make(chan int, 1)
	args := append([]string{"serve", "--db", dbPath, "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)
	go func() { exit <- Execute(ctx, args, Streams{In: strings.NewReader(""), Out: io.Discard, Err: logs}) }()
	select {
	case first := <-logs.line:
		var m map[string]any
		if err := json.Unmarshal([]byte(first), &m); err != nil {
			cancel()
			t.Fatalf("first log line %q: %v", first, err)
		}
		if m["db"] != dbPath || m["listen"] == nil {
			cancel()
			t.Fatalf("first log line %q does not name the db and the address", first)
		}
		addr = m["listen"].(string)
	case code := <-exit:
		cancel()
		t.Fatalf("serve exited with %d: %s", code, logs.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("serve did not start")
	}
	return addr, logs, cancel, exit
}

func TestServe_EndToEnd(t *testing.T) {
	fake := fakeai.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	db := filepath.Join(t.TempDir(), "aiproxy.db")
	key, _, code := runCLI(t, "--db", db, "user", "create", "janlay")
	if code != 0 {
		t.Fatalf("user create exit %d", code)
	}
	key = strings.TrimSpace(key)
	if _, errs, code := runCLI(t, "--db", db, "provider", "add", "api.groq.com", "gsk_fake_upstream", "--base-url", up.URL); code != 0 {
		t.Fatalf("provider add: %s", errs)
	}
	addr, logs, stop, exit := startServe(t, db, "--default-provider", "api.groq.com", "--shutdown-grace", "20s")

	// A second serve on the same file refuses to start.
	_, errs, code := runCLI(t, "serve", "--db", db, "--listen", "127.0.0.1:0")
	if code == 0 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "already running") {
		t.Errorf("second serve: exit %d, stderr %q; want one line saying one already runs", code, errs)
	}

	// Open a stream, then ask the server to stop while it runs: the stream
	// still completes, and serve exits 0.
	req, _ := http.NewRequest("POST", "http://"+addr+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Fake-Mode", "gated:3")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	stop()
	// New connections are refused once shutdown has begun.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after shutdown began")
		}
		runtime.Gosched()
	}
	fake.Gate <- struct{}{}
	fake.Gate <- struct{}{}
	rest, err := io.ReadAll(br)
	res.Body.Close()
	if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream during shutdown: err %v, tail %q", err, rest)
	}
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("serve exit code %d, want 0; log:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit")
	}
	if strings.Contains(logs.String(), key) || strings.Contains(logs.String(), "gsk_fake_upstream") {
		t.Errorf("a key reached the log:\n%s", logs.String())
	}
	// The stream's usage was flushed before exit.
	out, _, _ := runCLI(t, "--db", db, "stats", "--json")
	var rows []struct{ Requests, TotalTokens int64 }
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Requests != 1 {
		t.Errorf("stats after shutdown = %s, want 1 request", out)
	}
}
