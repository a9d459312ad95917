//go:build unix && load

package e2e_test

// LOAD-1 is a measurement, not a CI gate: build with -tags load.
//
//	go test -tags load -run LOAD1 -v -timeout 20m ./pkg/e2e
//
// AIPROXY_LOAD_STREAMS sets the number of streams (default: as many as the
// open-file limit allows, at most 9,000) and AIPROXY_LOAD_PACE the
// milliseconds between two events of a stream (default 1000).

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// procStats is what /proc says of a process.
type procStats struct {
	rssKiB  int64
	fds     int
	threads int
}

func (p procStats) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %d fds, %d threads", float64(p.rssKiB)/1024, p.fds, p.threads)
}

func readProc(t *testing.T, pid int) procStats {
	t.Helper()
	var s procStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/status: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			s.rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
		case "Threads:":
			s.threads, _ = strconv.Atoi(f[1])
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/fd: %v", pid, err)
	}
	s.fds = len(ents)
	return s
}

// startUpstreams runs the fake upstream in a helper process listening on
// 127.0.0.2–127.0.0.9 and returns its addresses, one per IP.
func startUpstreams(t *testing.T) []string {
	t.Helper()
	var addrs []string
	for i := 2; i <= 9; i++ {
		addrs = append(addrs, fmt.Sprintf("127.0.0.%d:0", i))
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=upstream", "AIPROXY_E2E_ADDRS="+strings.Join(addrs, ","))
	orphanProof(cmd)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		got, ok := strings.CutPrefix(strings.TrimSpace(l), "listening ")
		if !ok {
			t.Fatalf("upstream helper said %q", l)
		}
		return strings.Split(got, ",")
	case <-time.After(startTimeout):
		t.Fatalf("upstream helper did not start within %v", startTimeout)
	}
	return nil
}

// stream is one open SSE stream through the proxy.
type stream struct {
	conn net.Conn
	done chan struct{}
}

// openStream sends a streamed chat completion over a raw connection from
// local, waits for the first event, and keeps reading in the background.
func openStream(addr, local, key, host, mode string, events *atomic.Int64) (*stream, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	body := `{"model":"gpt-fake","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + key +
		"\r\nX-Host-Final: " + host + "\r\nX-Fake-Mode: " + mode + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 1024)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		conn.Close()
		return nil, fmt.Errorf("status %q: %v", status, err)
	}
	for { // up to the first event
		l, err := br.ReadString('\n')
		if err != nil {
			conn.Close()
			return nil, err
		}
		if strings.Contains(l, "data: ") {
			break
		}
	}
	conn.SetDeadline(time.Time{})
	s := &stream{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 512)
		for {
			n, err := br.Read(buf)
			if c := bytes.Count(buf[:n], []byte("data:")); c > 0 {
				events.Add(int64(c))
			}
			if err != nil {
				return
			}
		}
	}()
	return s, nil
}

var goroutineHeader = regexp.MustCompile(`(?m)^goroutine \d+ [^\n]*\[`)

// TestLOAD1_ManyOpenStreams opens as many SSE streams through aiproxy as
// the open-file limit allows (each takes 2 descriptors in the proxy), from
// and to 127.0.0.2–127.0.0.9, and measures the proxy's memory, descriptors
// and threads per stream and the latency of other requests meanwhile; then
// closes them all and checks that descriptors and threads return to their
// baseline. A second wave is opened and serve is stopped with SIGQUIT to
// count its goroutines at the peak (RELIABILITY.md LOAD-1; P2, measured).
func TestLOAD1_ManyOpenStreams(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	n := min(9000, int(lim.Cur-400)/2)
	if v, err := strconv.Atoi(os.Getenv("AIPROXY_LOAD_STREAMS")); err == nil {
		n = v
	}
	pace := 1000
	if v, err := strconv.Atoi(os.Getenv("AIPROXY_LOAD_PACE")); err == nil {
		pace = v
	}
	mode := fmt.Sprintf("sse:%d:%d", 600_000/pace, pace)
	t.Logf("open-file limit %d/%d: %d streams, mode %s", lim.Cur, lim.Max, n, mode)

	e := newEnv(t)
	key := e.createUser("alice")
	ups := startUpstreams(t)
	var hosts []string
	for i, a := range ups {
		h := fmt.Sprintf("up%d.test", i+2)
		e.mustCLI("provider", "add", h, "sk-load-secret", "--base-url", "http://"+a)
		hosts = append(hosts, h)
	}
	e.extraEnv = []string{"GOTRACEBACK=all"} // SIGQUIT dumps every goroutine
	srv := e.serve()
	pid := srv.cmd.Process.Pid
	mustProxy(t, srv.addr, key)

	extra := func(what string) (p50, p99 time.Duration) {
		var ds []time.Duration
		for range 200 {
			r, err := proxied(t.Context(), srv.addr, key, "ok")
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: extra request = %d %q, %v", what, r.status, r.body, err)
			}
			ds = append(ds, r.dur)
		}
		return percentile(ds, 0.5), percentile(ds, 0.99)
	}
	b50, b99 := extra("baseline")
	client.CloseIdleConnections()
	base := readProc(t, pid)
	t.Logf("baseline: %v; extra request p50 %v p99 %v", base, b50, b99)

	var events atomic.Int64
	open := func(count int) []*stream {
		streams := make([]*stream, count)
		var wg sync.WaitGroup
		var failed atomic.Int64
		var firstErr atomic.Value
		jobs := make(chan int)
		for range 64 {
			wg.Go(func() {
				for i := range jobs {
					s, err := openStream(srv.addr, fmt.Sprintf("127.0.0.%d", 2+i%8), key, hosts[i%len(hosts)], mode, &events)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					streams[i] = s
				}
			})
		}
		for i := range count {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		if f := failed.Load(); f > 0 {
			t.Errorf("%d of %d streams failed to open, first: %v", f, count, firstErr.Load())
		}
		return streams
	}
	closeAll := func(streams []*stream) {
		for _, s := range streams {
			if s != nil {
				s.conn.Close()
			}
		}
		for _, s := range streams {
			if s != nil {
				<-s.done
			}
		}
	}

	// advance waits until the streams have delivered about k more events
	// each, and returns how long that took.
	advance := func(what string, k int) time.Duration {
		t.Helper()
		ev0, t0 := events.Load(), time.Now()
		bound := time.Minute + time.Duration(2*k*pace)*time.Millisecond
		if !poll(bound, func() bool { return events.Load()-ev0 >= int64(k*n) }) {
			t.Fatalf("%s: %d events in %v, want %d (%d per stream)", what, events.Load()-ev0, bound, k*n, k)
		}
		return time.Since(t0)
	}

	start := time.Now()
	streams := open(n)
	opened := time.Since(start)
	advance("steady state", 3) // the streams run a few events
	peak := readProc(t, pid)
	p50, p99 := extra("with the streams open")
	// Streams opened together send in bursts: over five events each the
	// estimate is off by at most about one pace in five.
	rate := float64(5*n) / advance("event rate", 5).Seconds()
	perStream := float64(peak.rssKiB-base.rssKiB) / float64(n)
	t.Logf("LOAD-1 %d streams open (in %v): %v; %.1f KiB RSS, %.2f fds, %.3f threads per stream; "+
		"%.0f events/s reaching the clients; extra request p50 %v p99 %v",
		n, opened.Round(time.Millisecond), peak, perStream, float64(peak.fds-base.fds)/float64(n),
		float64(peak.threads-base.threads)/float64(n), rate, p50, p99)
	t.Logf("LOAD-1 projection for 10,000 streams: %.0f MiB RSS above baseline, %d fds in the proxy (limit %d)",
		perStream*10000/1024, base.fds+20000, lim.Cur)
	// "Normal latency": RELIABILITY.md's figure is p99 < 100 ms; the test
	// compares with the baseline of this run instead of a wall-clock bound.
	if p99 > 25*b99 {
		t.Errorf("extra request p99 with %d streams open = %v, want ≤ 25 × the baseline p99 %v", n, p99, b99)
	}

	closeAll(streams)
	var after procStats
	back := poll(30*time.Second, func() bool {
		after = readProc(t, pid)
		return after.fds <= base.fds+10
	})
	t.Logf("30 s after closing: %v (baseline %v; Go keeps the freed heap until a GC and the scavenger return it)", after, base)
	if !back {
		t.Errorf("fds %d 30 s after closing all streams, want back to about %d", after.fds, base.fds)
	}
	left := goroutinesAtQuit(t, srv)
	t.Logf("LOAD-1 goroutines after closing all streams: %d", left)
	if left > 50 {
		t.Errorf("%d goroutines left after closing all streams, want about the baseline: a leak", left)
	}

	// Second wave on a fresh serve: goroutines at the peak.
	srv = e.serve()
	pid = srv.cmd.Process.Pid
	streams = open(n)
	advance("second wave", 1)
	g := goroutinesAtQuit(t, srv)
	closeAll(streams)
	t.Logf("LOAD-1 goroutines at %d open streams: %d (%.2f per stream)", n, g, float64(g)/float64(n))
}

// waitDone waits up to d for the process to exit and reports whether it did.
func (s *serveProc) waitDone(d time.Duration) bool {
	select {
	case <-s.done:
		return true
	case <-time.After(d):
		return false
	}
}

// goroutinesAtQuit stops serve with SIGQUIT (GOTRACEBACK=all) and counts
// the goroutines in its dump.
func goroutinesAtQuit(t *testing.T, srv *serveProc) int {
	t.Helper()
	srv.cmd.Process.Signal(syscall.SIGQUIT)
	if !srv.waitDone(2 * time.Minute) {
		t.Errorf("serve did not exit on SIGQUIT within 2 minutes")
	}
	return len(goroutineHeader.FindAllString(srv.logs.String(), -1))
}
