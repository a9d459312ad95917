package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// relPacedUpstream writes n pieces, pace apart, flushing each, with content
// type ct (and no Content-Length).
func relPacedUpstream(ct string, n int, pace time.Duration, piece func(i int) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		rc.Flush()
		for i := range n {
			if i > 0 {
				select {
				case <-time.After(pace):
				case <-r.Context().Done():
					return
				}
			}
			io.WriteString(w, piece(i))
			rc.Flush()
		}
	})
}

// relArrivals reads body and returns the arrival time of each read that
// brought a new piece, where a piece is a line (by lines) or a byte.
func relArrivals(t *testing.T, body io.Reader, byByte bool) []time.Time {
	t.Helper()
	var at []time.Time
	br := bufio.NewReader(body)
	for {
		if byByte {
			if _, err := br.ReadByte(); err != nil {
				return at
			}
			at = append(at, time.Now())
			continue
		}
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") || strings.HasPrefix(line, "{") {
			at = append(at, time.Now())
		}
		if err != nil {
			return at
		}
	}
}

// relCheckPacing checks that n pieces sent pace apart arrived spread out as
// they were sent, not in a lump: the span covers at least half the sending
// time, and most gaps are at least half the pace. The bounds are loose so
// that a loaded machine cannot fail them; a buffering proxy fails them all.
func relCheckPacing(t *testing.T, name string, at []time.Time, n int, pace time.Duration) {
	t.Helper()
	if len(at) < n {
		t.Errorf("%s: %d pieces arrived, want %d", name, len(at), n)
		return
	}
	at = at[:n]
	span := at[n-1].Sub(at[0])
	var gaps []time.Duration
	wide := 0
	for i := 1; i < n; i++ {
		g := at[i].Sub(at[i-1])
		gaps = append(gaps, g)
		if g >= pace/2 {
			wide++
		}
	}
	slices.Sort(gaps)
	median := gaps[len(gaps)/2]
	t.Logf("%s: span %v, median gap %v (pace %v), %d of %d gaps ≥ pace/2", name, span, median, pace, wide, n-1)
	if span < time.Duration(n-1)*pace/2 {
		t.Errorf("%s: %d pieces arrived within %v; sent over %v: buffered", name, n, span, time.Duration(n-1)*pace)
	}
	if median < pace/2 || median > 4*pace {
		t.Errorf("%s: median gap %v, want about %v", name, median, pace)
	}
	if wide < (n-1)/2 {
		t.Errorf("%s: only %d of %d gaps were at least %v: pieces arrived in lumps", name, wide, n-1, pace/2)
	}
}

// TestSTR1_EventsArriveAsSent is the timing proof of STR-1 (the strict
// proof is TestProxy_StreamNotBuffered): 20 events 50 ms apart arrive about
// 50 ms apart, with and without usage stripping, with other content types,
// gzip, and 1-byte writes.
func TestSTR1_EventsArriveAsSent(t *testing.T) {
	t.Parallel()
	const n, pace = 20, 50 * time.Millisecond
	h := newHarness(t, harnessOpts{})
	relUpstream(t, h, "ndjson.test", "sk-ndjson", relPacedUpstream("application/x-ndjson", n, pace, func(i int) string {
		return fmt.Sprintf("{\"i\":%d}\n", i)
	}))
	relUpstream(t, h, "plain.test", "sk-plain", relPacedUpstream("text/event-stream", n, pace, func(i int) string {
		return fmt.Sprintf("data: %d\n\n", i%10)
	}))
	relUpstream(t, h, "bytes.test", "sk-bytes", relPacedUpstream("text/event-stream; charset=utf-8", n, pace, func(i int) string {
		return "x"
	}))
	relUpstream(t, h, "newlines.test", "sk-newlines", relPacedUpstream("text/event-stream", n, pace, func(i int) string {
		return "\n"
	}))
	relUpstream(t, h, "bytes-plain.test", "sk-bytes-plain", relPacedUpstream("text/plain", n, pace, func(i int) string {
		return "y"
	}))
	cases := []struct {
		name, path, body string
		hdr              []string
		byByte           bool
	}{
		{"sse, usage stripped", "/v1/chat/completions", streamBody, []string{"X-Fake-Mode", "sse:20:50"}, false},
		{"sse, usage asked", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, []string{"X-Fake-Mode", "sse:20:50"}, false},
		{"sse, not chat", "/v1/responses", streamBody, []string{"X-Fake-Mode", "sse:20:50"}, false},
		{"gzip sse", "/v1/chat/completions", streamBody, []string{"X-Fake-Mode", "gzip:20:50", "Accept-Encoding", "gzip"}, false},
		{"ndjson, chunked", "/v1/chat/completions", chatBody, []string{"X-Host-Final", "ndjson.test"}, false},
		{"1-byte payload events, stripped", "/v1/chat/completions", streamBody, []string{"X-Host-Final", "plain.test"}, false},
		{"1-byte writes, sse", "/v1/responses", streamBody, []string{"X-Host-Final", "bytes.test"}, true},
		// With usage stripping an unfinished line is held until its end
		// (pkg/openai.StreamScanner), so the 1-byte writes there are line
		// ends: each is a whole line and must pass at once.
		{"1-byte writes, stripped", "/v1/chat/completions", streamBody, []string{"X-Host-Final", "newlines.test"}, true},
		{"1-byte writes, text/plain", "/v1/chat/completions", chatBody, []string{"X-Host-Final", "bytes-plain.test"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest("POST", h.proxy.URL+tc.path, strings.NewReader(tc.body))
			req.Header = relAuth(h.key, tc.hdr...)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body io.Reader = res.Body
			if res.Header.Get("Content-Encoding") == "gzip" {
				t.Fatalf("gzip reached the client although the proxy decodes it")
			}
			at := relArrivals(t, body, tc.byByte)
			relCheckPacing(t, tc.name, at, n, pace)
		})
	}
}

// relAbortShape is one way a client leaves: it starts a request and
// returns once it has cancelled it.
type relAbortShape struct {
	name string
	run  func(h *harness, client *http.Client) error
}

// relAbortShapes are STR-2's three shapes, plus a non-stream request that
// hangs before any byte.
func relAbortShapes() []relAbortShape {
	start := func(h *harness, client *http.Client, mode, body string) (*http.Response, context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header = relAuth(h.key, "X-Fake-Mode", mode)
		res, err := client.Do(req)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		return res, cancel, nil
	}
	waitStarted := func(h *harness) error {
		select {
		case <-h.fake.Started:
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("the upstream never got the request")
		}
	}
	return []relAbortShape{
		{"mid-stream", func(h *harness, client *http.Client) error {
			res, cancel, err := start(h, client, "sse:100:20", streamBody)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			if err := waitStarted(h); err != nil {
				return err
			}
			br := bufio.NewReader(res.Body)
			for range 3 {
				if _, err := br.ReadString('\n'); err != nil {
					return fmt.Errorf("reading the first events: %v", err)
				}
			}
			cancel()
			return nil
		}},
		{"before first byte, stream", func(h *harness, client *http.Client) error {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(streamBody))
			req.Header = relAuth(h.key, "X-Fake-Mode", "hang")
			errc := make(chan error, 1)
			go func() {
				res, err := client.Do(req)
				if err == nil {
					res.Body.Close()
				}
				errc <- err
			}()
			if err := waitStarted(h); err != nil {
				cancel()
				return err
			}
			cancel()
			<-errc
			return nil
		}},
		{"before first byte, non-stream", func(h *harness, client *http.Client) error {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody))
			req.Header = relAuth(h.key, "X-Fake-Mode", "hang")
			errc := make(chan error, 1)
			go func() {
				res, err := client.Do(req)
				if err == nil {
					res.Body.Close()
				}
				errc <- err
			}()
			if err := waitStarted(h); err != nil {
				cancel()
				return err
			}
			cancel()
			<-errc
			return nil
		}},
		{"hang-body, non-stream", func(h *harness, client *http.Client) error {
			// Headers, then silence. The client does not wait for the headers
			// (see TestSTR1_HeadersBeforeFirstEvent): it leaves shortly after
			// the upstream has answered them.
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody))
			req.Header = relAuth(h.key, "X-Fake-Mode", "hang-body")
			errc := make(chan error, 1)
			go func() {
				res, err := client.Do(req)
				if err == nil {
					res.Body.Close()
				}
				errc <- err
			}()
			if err := waitStarted(h); err != nil {
				cancel()
				return err
			}
			time.Sleep(5 * time.Millisecond)
			cancel()
			<-errc
			return nil
		}},
	}
}

// TestSTR2_ClientLeavingCancelsUpstream: in every shape, the upstream sees
// the cancellation after the client leaves, by ordering rather than a
// stopwatch: the mid-stream upstream ends "canceled" before it could finish
// its 2 s stream, and the hanging ones, which never end by themselves, end
// "canceled" (the wait is bounded at 10 s; the promise's figure is 1 s, and
// the time taken is logged).
func TestSTR2_ClientLeavingCancelsUpstream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	client := relNoKeepAlive()
	for _, shape := range relAbortShapes() {
		t.Run(shape.name, func(t *testing.T) {
			if err := shape.run(h, client); err != nil {
				t.Fatal(err)
			}
			left := time.Now()
			select {
			case reason := <-h.fake.Done:
				d := time.Since(left)
				t.Logf("upstream cancelled %v after the client left", d)
				if reason != "canceled" {
					t.Errorf("upstream ended with %q, want canceled", reason)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("upstream not cancelled 10 s after the client left")
			}
		})
	}
	relWaitUsage(t, h, 4, 10*time.Second)
	h.flushUsage()
	rows := h.stats("")
	if len(rows) != 1 || rows[0].Requests != 4 || rows[0].Partial != 4 {
		t.Errorf("usage = %+v, want 4 requests, all partial", rows)
	}
}

// TestSTR3_AbortedStreamsLeakNothing: thousands of aborted requests of
// every STR-2 shape, and requests cancelled at random moments, leave
// goroutines and file descriptors where they were, and the proxy working.
func TestSTR3_AbortedStreamsLeakNothing(t *testing.T) {
	// Not parallel: it counts the process's goroutines and descriptors.
	// A fixed count, each request bounded by run's waits: 1000 under the
	// race detector (about 10 s on two cores), where a leak of one
	// goroutine in fifty aborts still shows.
	n := 2000
	if relRace {
		n = 1000
	}
	if testing.Short() {
		n = 200
	}
	h := newHarness(t, harnessOpts{})
	client := relNoKeepAlive()
	shapes := relAbortShapes()
	run := func(i int) {
		t.Helper()
		s := shapes[i%len(shapes)]
		if err := s.run(h, client); err != nil {
			t.Fatalf("%s #%d: %v", s.name, i, err)
		}
		select {
		case <-h.fake.Done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s #%d: upstream not cancelled", s.name, i)
		}
	}
	for i := range 20 { // warm pools and lazily started goroutines
		run(i)
	}
	baseG, baseFD := relQuietGoroutines(2*time.Second), relFDs(t)

	start := time.Now()
	done := 0
	for done < n {
		run(done)
		done++
	}
	// Requests cancelled at a random moment, from before the key lookup to
	// the middle of the answer.
	var cancelled atomic.Int32
	for i := range n / 4 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(3000))*time.Microsecond)
		req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		req.Header = relAuth(h.key, "X-Fake-Mode", []string{"ok", "sse:3:1"}[i%2])
		if res, err := client.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		} else {
			cancelled.Add(1)
		}
		cancel()
	}
	t.Logf("%d aborted requests in %v; %d of %d random cancellations hit", done, time.Since(start), cancelled.Load(), n/4)
	// The proxy still answers, through the same store and cache.
	if a := relSend(t, client, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key)); a.status != 200 {
		t.Errorf("after the aborts: status %d %s", a.status, a.body)
	}
	client.CloseIdleConnections()
	g, fd := relSettle(t, baseG, baseFD, 20, 10, 5*time.Second)
	t.Logf("goroutines %d → %d, fds %d → %d", baseG, g, baseFD, fd)
	if g > baseG+20 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines %d after, %d before: leak\n%s", g, baseG, buf[:runtime.Stack(buf, true)])
	}
	if fd > baseFD+10 {
		t.Errorf("file descriptors %d after, %d before: leak", fd, baseFD)
	}
	relNoPanicLogged(t, h)
}

// TestSTR4_UpstreamCutIsNeverCleanEnd: an upstream that dies after its
// headers makes the client's answer end in error (no last chunk, or fewer
// bytes than Content-Length), with every event sent before the cut; the
// usage record is flagged partial.
func TestSTR4_UpstreamCutIsNeverCleanEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	cutCL := newRelRawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"+`{"id":"chatcmpl-1","choices":[`)
	h.addProvider("cut-cl.test", "sk-cutcl", cutCL.url())
	cutChunked := newRelRawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"id\":\"chatcmpl-\r\n")
	h.addProvider("cut-chunked.test", "sk-cutchunked", cutChunked.url())
	cutSSE := newRelRawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
		fmt.Sprintf("%x\r\n%s\r\n", len(fakeai.Chunk("m", 0)), fakeai.Chunk("m", 0)))
	h.addProvider("cut-sse.test", "sk-cutsse", cutSSE.url())

	cases := []struct {
		name   string
		hdr    []string
		body   string
		events int
	}{
		{"fakeai cut:3", []string{"X-Fake-Mode: cut:3"}, streamBody, 3},
		{"fakeai cut:1, usage asked", []string{"X-Fake-Mode: cut:1"}, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, 1},
		{"fakeai cut:0", []string{"X-Fake-Mode: cut:0"}, streamBody, 0},
		{"raw sse cut", []string{"X-Host-Final: cut-sse.test"}, streamBody, 1},
		{"Content-Length short", []string{"X-Host-Final: cut-cl.test"}, chatBody, 0},
		{"chunked cut", []string{"X-Host-Final: cut-chunked.test"}, chatBody, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ans := relRaw(t, relAddr(h), relRequest("POST", "/v1/chat/completions",
				append([]string{"Authorization: Bearer " + h.key}, tc.hdr...), tc.body), 10*time.Second)
			if len(ans) == 0 {
				// The connection closed before any answer: an abort too.
				if tc.events > 0 {
					t.Errorf("no answer, but %d events were sent before the cut", tc.events)
				}
				return
			}
			if len(ans) != 1 {
				t.Fatalf("%d answers, want 1", len(ans))
			}
			a := ans[0]
			if a.status != 200 {
				t.Fatalf("status %d, want the upstream's 200", a.status)
			}
			if a.err == nil {
				t.Errorf("the answer ended cleanly (%q); want an abort", a.body)
			}
			if got := strings.Count(a.body, "data: {"); got != tc.events {
				t.Errorf("client saw %d events, want %d: %q", got, tc.events, a.body)
			}
			if strings.Contains(a.body, "[DONE]") {
				t.Errorf("client saw [DONE] from a cut stream")
			}
		})
	}
	relWaitUsage(t, h, int64(len(cases)), 10*time.Second)
	h.flushUsage()
	if rows := h.stats(""); rows[0].Partial != int64(len(cases)) {
		t.Errorf("usage = %+v, want all %d partial", rows, len(cases))
	}
}

// TestSTR5_UpstreamErrorsPassThroughOnce: upstream 4xx/5xx reach the client
// unchanged (status, body bytes, rate-limit headers), each after exactly one
// upstream request; a POST the upstream dropped without an answer is not
// sent again.
func TestSTR5_UpstreamErrorsPassThroughOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	headers := map[string]string{
		"Retry-After":                    "7",
		"X-Ratelimit-Limit-Requests":     "500",
		"X-Ratelimit-Remaining-Requests": "0",
		"X-Ratelimit-Reset-Requests":     "7s",
		"X-Ratelimit-Remaining-Tokens":   "12",
		"X-Request-Id":                   "req_abc123", // comes back as X-Upstream-Request-Id
		"Openai-Processing-Ms":           "12",
	}
	var count atomic.Int32
	statusUpstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/models" {
			// aiproxy asks for the model list to tell a refused key from a
			// refused request (401/403); that is not the request again.
			w.WriteHeader(http.StatusOK)
			return
		}
		count.Add(1)
		var code int
		fmt.Sscan(r.Header.Get("X-Status"), &code)
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded","status":%d}}`, code)
	}))
	t.Cleanup(statusUpstream.Close)
	// A provider per request: a key answered 401, 403 or 429 rests
	// (CONTRACT section 5), and the next request would not reach it.
	hosts := 0
	newHost := func() string {
		hosts++
		host := fmt.Sprintf("status%d.test", hosts)
		h.addProvider(host, "sk-status-secret", statusUpstream.URL)
		return host
	}
	for _, code := range []int{400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504} {
		for _, tc := range []struct{ method, path, body, ct string }{
			{"POST", "/v1/chat/completions", chatBody, "application/json"},
			{"POST", "/v1/chat/completions", streamBody, "application/json"},
			{"POST", "/v1/audio/transcriptions", "--x\r\n\r\nfile\r\n--x--\r\n", "multipart/form-data; boundary=x"},
			{"GET", "/v1/chat/completions", "", ""},
		} {
			before := count.Load()
			a := relSend(t, nil, tc.method, h.proxy.URL+tc.path, tc.body,
				relAuth(h.key, "X-Host-Final", newHost(), "X-Status", fmt.Sprint(code), "Content-Type", tc.ct))
			want := fmt.Sprintf(`{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded","status":%d}}`, code)
			if a.status != code || relSHA([]byte(a.body)) != relSHA([]byte(want)) {
				t.Errorf("%d %s %s: got %d %q, want it unchanged", code, tc.method, tc.ct, a.status, a.body)
			}
			for k, v := range headers {
				if k == "X-Request-Id" {
					k = "X-Upstream-Request-Id" // aiproxy's own id is in X-Request-Id
				}
				if got := a.header.Get(k); got != v {
					t.Errorf("%d %s: header %s = %q, want %q", code, tc.method, k, got, v)
				}
			}
			if n := count.Load() - before; n != 1 {
				t.Errorf("%d %s %s: upstream saw %d requests, want 1", code, tc.method, tc.ct, n)
			}
		}
	}

	// An upstream that reads a request on a reused connection and closes it
	// without an answer: Go's transport retries some such requests by
	// itself. A POST must reach the upstream once.
	var seen atomic.Int32
	relUpstream(t, h, "drop.test", "sk-drop-secret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if seen.Add(1)%2 == 0 {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		w.Write([]byte("{}"))
	}))
	for _, tc := range []struct {
		name, method, body string
		hdr                []string
		once               bool
	}{
		{"POST with body", "POST", chatBody, nil, true},
		{"POST without body", "POST", "", nil, true},
		{"POST with Idempotency-Key", "POST", "", []string{"Idempotency-Key", "abc"}, true},
		{"POST with X-Idempotency-Key", "POST", "", []string{"X-Idempotency-Key", "abc"}, true},
		{"GET", "GET", "", nil, false},
	} {
		t.Run("dropped "+tc.name, func(t *testing.T) {
			client := &http.Client{}
			defer client.CloseIdleConnections()
			// The first request leaves a connection in the proxy's pool;
			// the second is dropped on it.
			seen.Store(0)
			relSend(t, client, tc.method, h.proxy.URL+"/v1/x", tc.body, relAuth(h.key, append([]string{"X-Host-Final", "drop.test"}, tc.hdr...)...))
			a := relSend(t, client, tc.method, h.proxy.URL+"/v1/x", tc.body, relAuth(h.key, append([]string{"X-Host-Final", "drop.test"}, tc.hdr...)...))
			n := seen.Load()
			t.Logf("second request: status %d, upstream saw %d requests", a.status, n)
			if tc.once && n != 2 {
				t.Errorf("upstream saw %d requests for 2 client requests: a POST was retried (contract: no retry once the upstream may have it)", n)
			}
			if tc.once && a.status != 502 {
				t.Errorf("dropped POST: status %d, want 502", a.status)
			}
		})
	}
}

// TestSTR6_LayeredTimeouts: no headers within the header timeout → 504, not
// before that timeout; a stream longer than the header and idle timeouts
// still completes (there is no total deadline); an upstream silent mid-body
// is aborted, not before the idle timeout, and cancelled. The timeouts are
// injected (0.5 s and 0.7 s); how late after them the answers come is only
// logged: a hang fails at the client's and the test's bounded waits.
func TestSTR6_LayeredTimeouts(t *testing.T) {
	t.Parallel()
	const headerTimeout, idleTimeout = 500 * time.Millisecond, 700 * time.Millisecond
	h := newHarness(t, harnessOpts{proxy: proxy.Config{HeaderTimeout: headerTimeout, IdleTimeout: idleTimeout}})
	t.Run("header timeout", func(t *testing.T) {
		for _, body := range []string{chatBody, streamBody} {
			start := time.Now()
			a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", body, relAuth(h.key, "X-Fake-Mode", "hang"))
			d := time.Since(start)
			relWantError(t, "hang", a.status, a.header, a.body, 504, "upstream_timeout")
			t.Logf("504 after %v (header timeout %v)", d, headerTimeout)
			if d < headerTimeout-50*time.Millisecond {
				t.Errorf("504 after %v, before the header timeout %v", d, headerTimeout)
			}
			select {
			case r := <-h.fake.Done:
				if r != "canceled" {
					t.Errorf("upstream ended %q, want canceled", r)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("upstream not cancelled after the 504")
			}
		}
	})
	t.Run("no total deadline", func(t *testing.T) {
		// 8 events 200 ms apart: 1.4 s, longer than both timeouts.
		start := time.Now()
		a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", streamBody, relAuth(h.key, "X-Fake-Mode", "sse:8:200"))
		d := time.Since(start)
		if a.status != 200 || !strings.HasSuffix(a.body, "data: [DONE]\n\n") || strings.Count(a.body, "data: {") != 8 {
			t.Errorf("long stream: %d %q, want all 8 events and [DONE]", a.status, a.body)
		}
		if d < headerTimeout+idleTimeout {
			t.Errorf("stream took %v; the test needs it longer than %v", d, headerTimeout+idleTimeout)
		}
		<-h.fake.Done
	})
	t.Run("idle timeout", func(t *testing.T) {
		for _, body := range []string{chatBody, streamBody} {
			start := time.Now()
			req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header = relAuth(h.key, "X-Fake-Mode", "hang-body")
			// The abort may come before or after the headers reach the
			// client (TestSTR1_HeadersBeforeFirstEvent); either way it must
			// be an error, not a clean end.
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				_, err = io.ReadAll(res.Body)
				res.Body.Close()
			}
			d := time.Since(start)
			if err == nil {
				t.Errorf("a silent upstream ended the answer cleanly after %v; want an abort", d)
			}
			t.Logf("aborted after %v (idle timeout %v)", d, idleTimeout)
			if d < idleTimeout-50*time.Millisecond {
				t.Errorf("aborted after %v, before the idle timeout %v", d, idleTimeout)
			}
			select {
			case r := <-h.fake.Done:
				if r != "canceled" {
					t.Errorf("upstream ended %q, want canceled", r)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("upstream not cancelled after the idle timeout")
			}
		}
	})
	t.Run("slow client upload is not cut by the header timeout", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for _, part := range []string{`{"model":"m",`, `"messages":[]`, `}`} {
				time.Sleep(300 * time.Millisecond)
				pw.Write([]byte(part))
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/chat/completions", pr)
		req.Header = relAuth(h.key, "Content-Type", "text/plain", "X-Fake-Mode", "echo")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), `"messages\":[]`) {
			t.Errorf("slow upload: %d %s", res.StatusCode, b)
		}
	})
	relNoPanicLogged(t, h)
}

// TestSTR1_HeadersBeforeFirstEvent: the upstream's status and headers reach
// the client when the upstream sends them, not with the first event: a
// reasoning model may think for minutes before its first token, and a client
// with a time-to-headers limit (or a user watching) must see the 200 at once.
func TestSTR1_HeadersBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, body := range []string{streamBody, chatBody} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "POST", h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header = relAuth(h.key, "X-Fake-Mode", "hang-body")
		got := make(chan *http.Response, 1)
		go func() {
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				close(got)
				return
			}
			got <- res
		}()
		select {
		case res, ok := <-got:
			if !ok || res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("headers: %v", res)
			}
			if ok {
				res.Body.Close()
			}
		case <-time.After(3 * time.Second):
			t.Errorf("the upstream's 200 and headers did not reach the client within 3 s (they wait for the first body byte)")
		}
		cancel()
		<-h.fake.Done
	}
}
