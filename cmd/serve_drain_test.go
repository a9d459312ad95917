package cmd

// Process-level reliability tests of `aiproxy serve` (RELIABILITY.md): the
// SIGTERM drain with many open streams (STR-7), and what the http.Server
// settings of serve.go promise (STR-6 slowloris, LIM-1 header limit, SUP-2).
// serve runs in-process through Execute; cancelling its context is what
// main.go's signal.NotifyContext does on SIGTERM.

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
)

// drainSetup makes a database with one user and a provider on fake, and
// returns the path and the user key.
func drainSetup(t *testing.T, upstreamURL string) (string, string) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "aiproxy.db")
	key, errs, code := runCLI(t, "--db", db, "user", "create", "drainer")
	if code != 0 {
		t.Fatalf("user create: %s", errs)
	}
	if _, errs, code := runCLI(t, "--db", db, "provider", "add", "api.openai.com", "sk-drain-upstream-secret", "--base-url", upstreamURL); code != 0 {
		t.Fatalf("provider add: %s", errs)
	}
	return db, strings.TrimSpace(key)
}

// TestSTR7_DrainManyStreams: 50 streams are open (plus a non-stream request
// that finishes within the grace period and one whose upstream never
// answers) when serve is told to stop. The listener closes at once; the
// quick request completes; after the grace period every stream and the hung
// request end in an error for their clients (never a clean, complete-looking
// end), every upstream request is cancelled, serve exits 0 within grace+5 s,
// and all their usage rows are in the database, which passes integrity_check.
func TestSTR7_DrainManyStreams(t *testing.T) {
	const streams = 50
	const grace = 2 * time.Second
	fake := fakeai.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	// The quick request's upstream answers once the test lets it, after
	// the shutdown began: an in-flight request by construction.
	quickArrived, finishQuick := make(chan struct{}, 1), make(chan struct{})
	var finishOnce sync.Once
	letQuickFinish := func() { finishOnce.Do(func() { close(finishQuick) }) }
	defer letQuickFinish()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case quickArrived <- struct{}{}:
		default:
		}
		select {
		case <-finishQuick:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	defer slow.Close()
	db, key := drainSetup(t, up.URL)
	if _, errs, code := runCLI(t, "--db", db, "provider", "add", "slow.test", "sk-slow-secret", "--base-url", slow.URL); code != 0 {
		t.Fatalf("provider add: %s", errs)
	}
	addr, logs, stop, exit := startServe(t, db, "--shutdown-grace", grace.String())
	defer stop()

	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 100}}
	defer client.CloseIdleConnections()
	post := func(mode, body string, hdr ...string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		if mode != "" {
			req.Header.Set("X-Fake-Mode", mode)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return client.Do(req)
	}

	// The streams: open, first event read.
	type stream struct {
		res *http.Response
		br  *bufio.Reader
	}
	var open []stream
	for i := range streams {
		res, err := post("sse:600:100", `{"model":"m","stream":true,"messages":[]}`)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		br := bufio.NewReader(res.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("stream %d: first event: %v", i, err)
		}
		open = append(open, stream{res, br})
	}
	// A request whose upstream never answers, and one that answers when let.
	type result struct {
		status int
		body   string
		err    error
	}
	hung, quick := make(chan result, 1), make(chan result, 1)
	go func() {
		res, err := post("hang", `{"model":"m","messages":[]}`)
		if err != nil {
			hung <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		hung <- result{res.StatusCode, string(b), err}
	}()
	<-fake.Started // the hung request is at the upstream
	for range streams {
		<-fake.Started
	}
	go func() {
		res, err := post("", `{"model":"m","messages":[]}`, "X-Host-Final", "slow.test")
		if err != nil {
			quick <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		quick <- result{res.StatusCode, string(b), err}
	}()
	select {
	case <-quickArrived: // the quick request is in flight
	case <-time.After(10 * time.Second):
		t.Fatalf("the quick request never reached its upstream")
	}

	// Every stream is read to its end; each must end in an error, not as if
	// complete. ended counts the streams that are over.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ended atomic.Int32
	clean := 0
	for _, s := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rest, err := io.ReadAll(s.br)
			ended.Add(1)
			s.res.Body.Close()
			if err == nil {
				mu.Lock()
				clean++
				mu.Unlock()
				if strings.Contains(string(rest), "[DONE]") {
					t.Errorf("a 60 s stream completed during a %v drain", grace)
				}
			}
		}()
	}

	stopped := time.Now()
	stop()

	// New connections are refused at once: before the grace period ends,
	// while every stream is still open (polled, bounded by the grace
	// period's end, when the streams are cut).
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if n := ended.Load(); n > 0 {
			t.Errorf("listener still accepting when %d streams had ended (%v after shutdown began)", n, time.Since(stopped))
			break
		}
		if time.Since(stopped) > grace+30*time.Second {
			t.Fatalf("listener still accepting and no stream ended %v after shutdown began", time.Since(stopped))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := ended.Load(); n > 0 {
		t.Errorf("%d streams ended before the listener closed", n)
	}
	// The in-flight request finishes during the grace period.
	letQuickFinish()
	wg.Wait()
	if clean > 0 {
		t.Errorf("%d of %d streams cut by the shutdown ended cleanly (a final chunk after partial data): clients take them for complete", clean, streams)
	}
	select {
	case r := <-quick:
		if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"usage"`) {
			t.Errorf("in-flight non-stream request: %d %q %v, want it to finish", r.status, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("in-flight non-stream request never finished")
	}
	select {
	case r := <-hung:
		if r.err == nil && r.status < 500 {
			t.Errorf("request whose upstream never answered: %d %q, no error; want an aborted connection or a 5xx, never a success", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the hung request never ended")
	}
	select {
	case code := <-exit:
		d := time.Since(stopped)
		if code != 0 {
			t.Errorf("serve exit code %d, want 0; log:\n%s", code, logs.String())
		}
		if d > grace+5*time.Second {
			t.Errorf("serve took %v to exit, want under %v", d, grace+5*time.Second)
		}
		if d < grace-100*time.Millisecond {
			t.Errorf("serve exited after %v, before the %v grace period", d, grace)
		}
	case <-time.After(grace + 30*time.Second):
		t.Fatalf("serve did not exit")
	}

	// The upstream saw all 51 of its requests end, cancelled.
	canceled := 0
	deadline := time.After(5 * time.Second)
	for canceled < streams+1 {
		select {
		case r := <-fake.Done:
			if r == "canceled" {
				canceled++
			}
		case <-deadline:
			t.Fatalf("upstream saw %d of %d requests cancelled", canceled, streams+1)
		}
	}

	// Usage: one row per request (the streams, the hung one, the quick one),
	// flushed before exit.
	out, _, _ := runCLI(t, "--db", db, "stats", "--json")
	var rows []struct{ Requests, Partial int64 }
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Requests != streams+2 {
		t.Errorf("stats after shutdown = %s, want %d requests", out, streams+2)
	} else if rows[0].Partial < streams+1 {
		t.Errorf("stats after shutdown = %s, want the %d cut requests partial", out, streams+1)
	}
	sdb, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	var ic string
	if err := sdb.QueryRow("PRAGMA integrity_check").Scan(&ic); err != nil || ic != "ok" {
		t.Errorf("integrity_check = %q, %v", ic, err)
	}
	if s := logs.String(); strings.Contains(s, key) || strings.Contains(s, "sk-drain-upstream-secret") || strings.Contains(s, "sk-slow-secret") {
		t.Errorf("a key reached the log")
	}
}

// TestSTR6_SlowlorisDroppedByReadHeaderTimeout: a client that sends its
// headers a byte at a time is dropped by serve's ReadHeaderTimeout no later
// than a client that sends part of its headers and then nothing: the
// bytes that trickle in do not extend the deadline. The two run side by
// side and are compared with each other, not with a wall clock. The
// timeout is serve's fixed 10 s (not configurable yet), so this takes
// about 10 s; it runs in parallel.
func TestSTR6_SlowlorisDroppedByReadHeaderTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("takes serve's 10 s ReadHeaderTimeout")
	}
	t.Parallel()
	fake := fakeai.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	db, _ := drainSetup(t, up.URL)
	addr, _, stop, exit := startServe(t, db)
	defer func() {
		stop()
		<-exit
	}()
	// dropped reports when the server closes c, measured from start.
	dropped := func(c net.Conn, start time.Time) <-chan time.Duration {
		ch := make(chan time.Duration, 1)
		go func() {
			buf := make([]byte, 512)
			c.SetReadDeadline(time.Now().Add(60 * time.Second)) // a bound, not the check
			for {
				if _, err := c.Read(buf); err != nil {
					ch <- time.Since(start)
					return
				}
			}
		}()
		return ch
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	slow, idle := dial(), dial()
	start := time.Now()
	io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	slowDone, idleDone := dropped(slow, start), dropped(idle, start)

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	bound := time.After(45 * time.Second)
	header := "X-Slow: " + strings.Repeat("a", 100)
	var slowAt, idleAt time.Duration
	for i := 0; slowAt == 0 || idleAt == 0; {
		select {
		case slowAt = <-slowDone:
			slowDone = nil
		case idleAt = <-idleDone:
			idleDone = nil
		case <-tick.C:
			if slowAt == 0 {
				if _, err := slow.Write([]byte{header[i%len(header)]}); err != nil {
					slowAt = time.Since(start)
					slowDone = nil
				}
				i++
			}
		case <-bound:
			t.Fatalf("after %v: slow client dropped %v, idle client dropped %v (0: still connected)", time.Since(start), slowAt, idleAt)
		}
	}
	t.Logf("slow client dropped after %v, idle client after %v", slowAt, idleAt)
	if slowAt > idleAt*5/4 {
		t.Errorf("slow client dropped after %v, idle client after %v: each byte extends the header deadline", slowAt, idleAt)
	}
}

// TestLIM1_SUP2_ServeHeaderLimitAndNoDebug: serve answers a 2 MB header with
// 431 (MaxHeaderBytes 1 MiB) without contacting the upstream, and exposes no
// pprof, expvar or metrics.
func TestLIM1_SUP2_ServeHeaderLimitAndNoDebug(t *testing.T) {
	t.Parallel()
	fake := fakeai.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	db, key := drainSetup(t, up.URL)
	addr, _, stop, exit := startServe(t, db, "--access-token", "Drain-Admin-Token-0123456789abcdef")
	defer func() {
		stop()
		<-exit
	}()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Big: ", key)
		io.Copy(c, io.LimitReader(strings.NewReader(strings.Repeat("a", 2<<20)), 2<<20))
		io.WriteString(c, "\r\nContent-Length: 2\r\n\r\n{}")
	}()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("2 MB header: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("2 MB header: status %d, want 431", res.StatusCode)
	}
	if fake.Count() != 0 {
		t.Errorf("the upstream was contacted")
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/debug/vars", "/metrics"} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 403 && res.StatusCode != 404 || strings.Contains(string(b), "goroutine") {
			t.Errorf("GET %s: %d %.100q, want 403/404", path, res.StatusCode, b)
		}
	}
}

// TestKEY7_ServeTokenChecks: serve warns about an admin token shorter than
// 16 characters and refuses one that a routed path segment would shadow,
// with one line on stderr.
func TestKEY7_ServeTokenChecks(t *testing.T) {
	t.Parallel()
	fake := fakeai.New()
	up := httptest.NewServer(fake)
	defer up.Close()
	db, _ := drainSetup(t, up.URL)
	for _, tok := range []string{"openai", "OpenAI", "admin", "me", "healthz", "v1", "V2", "api.groq.com", "host:1", "a/b", "a?b", "a#b", "a%2Fb", "a b"} {
		_, errs, code := runCLI(t, "serve", "--db", db, "--listen", "127.0.0.1:0", "--access-token", tok)
		if code == 0 || strings.Count(errs, "\n") != 1 {
			t.Errorf("token %q: exit %d, stderr %q; want a one-line refusal", tok, code, errs)
		}
	}
	_, logs, stop, exit := startServe(t, db, "--access-token", "short-token")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "shorter than 16") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-exit
	if !strings.Contains(logs.String(), "shorter than 16") {
		t.Errorf("no warning about a short token:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "short-token") {
		t.Errorf("the warning repeats the token")
	}
}
