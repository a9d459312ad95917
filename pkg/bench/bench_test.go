package bench

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// helperEnv makes the test binary the mock, as the driver makes itself.
const helperEnv = "AIPROXY_BENCH_TEST_MOCK"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		srv := NewServer(&Mock{}, log.New(os.Stderr, "", 0))
		go srv.Serve(ln)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		srv.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun_Tiny runs every phase of the benchmark once, tiny, against the
// mock in a child process, the baseline and an in-process aiproxy, and
// checks that every request succeeded and that the report renders. It
// proves that the suite runs; its figures mean nothing.
func TestRun_Tiny(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark reads /proc")
	}
	ctx := t.Context()
	addr, err := FreeAddr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	mock, err := StartProc("mock", filepath.Join(t.TempDir(), "mock.log"), []string{os.Args[0]}, []string{helperEnv + "=" + addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mock.Stop(5 * time.Second) })
	if err := WaitReady(ctx, mock, addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mockURL := &url.URL{Scheme: "http", Host: addr}

	base := httptest.NewServer(NewBaseline(mockURL, log.New(io.Discard, "", 0)))
	t.Cleanup(base.Close)
	ai, keys := newAiproxy(t, addr)

	self := func() []int { return []int{os.Getpid()} }
	targets := []Target{
		{Name: "direct", URL: mockURL.String(), PIDs: func() []int { return []int{mock.PID()} }},
		{Name: "baseline", URL: base.URL, PIDs: self},
		{Name: "aiproxy", URL: ai, Keys: keys, PIDs: self},
	}
	cfg := Config{
		Rates: []int{40}, RateDuration: 200 * time.Millisecond, Rounds: 2, Warmup: 100 * time.Millisecond,
		ClosedConcurrency: 2, ClosedDuration: 150 * time.Millisecond,
		ProbeStreams: 4, ProbeConcurrency: 2, ProbeEvents: 3, ProbePace: 5 * time.Millisecond,
		MassStreams: 6, MassPace: 50 * time.Millisecond, MassSettle: 50 * time.Millisecond,
		ExtraRate: 20, ExtraDuration: 100 * time.Millisecond,
		Sources: Sources(), Progress: testWriter{t},
	}
	res, err := Run(ctx, cfg, targets)
	if err != nil {
		t.Fatalf("Run() error = %v", err)
	}
	rep := NewReport(res)
	rep.AddMicro(ParseBenchOutput("BenchmarkAuthenticate/users=10/hot-2 \t 1000 \t 1200 ns/op \t 0 B/op \t 0 allocs/op\n" +
		"BenchmarkAuthenticate/users=1000000/hot-2 \t 1000 \t 1300 ns/op \t 0 B/op \t 0 allocs/op\n"))
	for _, tr := range rep.Targets {
		if tr.Errors != 0 {
			t.Errorf("%s: %d errors: rates %+v, closed %+v, streams %+v, concurrent %+v", tr.Name, tr.Errors, tr.Rates, tr.Closed, tr.Stream, tr.Mass)
		}
		if tr.Mass == nil || tr.Mass.Opened != cfg.MassStreams {
			t.Errorf("%s: concurrent streams = %+v, want %d opened", tr.Name, tr.Mass, cfg.MassStreams)
		}
		if tr.Stream == nil || tr.Stream.Events != cfg.ProbeStreams*cfg.ProbeEvents {
			t.Errorf("%s: stream probe = %+v, want %d events", tr.Name, tr.Stream, cfg.ProbeStreams*cfg.ProbeEvents)
		}
	}
	md := rep.Markdown()
	for _, want := range []string{"| | direct | baseline | aiproxy |", "added** p50 / p90 / p99 at 40 req/s", "key authentication flat from 10 to 1,000,000 users (slowest / fastest) | 1.08 ×"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown() lacks %q:\n%s", want, md)
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("json.Marshal(report) error = %v", err)
	}
	if s := ReadProcs([]int{mock.PID()}); s.RSS == 0 || s.FDs == 0 || s.Threads == 0 {
		t.Errorf("ReadProcs(mock) = %+v, want RSS, fds and threads", s)
	}
	if err := mock.Stop(5 * time.Second); err != nil && !strings.Contains(err.Error(), "signal") {
		t.Errorf("mock.Stop() = %v", err)
	}
}

// newAiproxy serves aiproxy in this process, with the mock at addr as its
// default provider, and returns its URL and two user keys.
func newAiproxy(t *testing.T, addr string) (string, []string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "aiproxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc := admin.New(db)
	if err := svc.AddProviderKey(ctx, admin.ProviderKey{Host: addr, Key: "sk-bench-upstream", BaseURL: "http://" + addr}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, name := range []string{"bench0", "bench1"} {
		k, err := svc.CreateUser(ctx, name, admin.Expiry{})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	lg := slog.New(slog.NewJSONHandler(io.Discard, nil))
	rec := usage.New(svc.RecordUsage, lg, 10000)
	px := proxy.New(svc, rec, lg, proxy.Config{DefaultProvider: addr})
	srv := httptest.NewServer(server.New(svc, px, lg, server.Config{}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		px.CloseIdle()
		rec.Close(context.Background())
		db.Close()
	})
	return srv.URL, keys
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestMock(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&Mock{})
	defer srv.Close()
	post := func(body string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	res, body := post(string(ChatBody), nil)
	if res.Header.Get("Content-Type") != "application/json" || body != string(Completion) {
		t.Errorf("non-stream answer = %q %q, want the completion", res.Header.Get("Content-Type"), body)
	}
	_, body = post(`{"stream": true}`, map[string]string{HeaderEvents: "2"})
	if n := strings.Count(body, `"sent_ns":`); n != 2 || strings.Contains(body, `"usage"`) || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("stream without usage = %q, want 2 chunks without usage, then [DONE]", body)
	}
	_, body = post(`{"stream":true,"stream_options":{"include_usage": true}}`, nil)
	if n := strings.Count(body, `"usage":null`); n != DefaultEvents || !strings.Contains(body, `"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}`) {
		t.Errorf("stream with usage = %q, want %d chunks with usage null and the usage chunk", body, DefaultEvents)
	}
}

func TestNginxConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := NginxConfig(dir, "127.0.0.1:18080", "127.0.0.1:18081", 2, os.Geteuid() == 0)
	for _, want := range []string{"proxy_buffering off;", "keepalive 128;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`} {
		if !strings.Contains(conf, want) {
			t.Errorf("NginxConfig() lacks %q", want)
		}
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", path).CombinedOutput(); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, out)
	}
}

func TestParseBenchOutput(t *testing.T) {
	t.Parallel()
	out := `goos: linux
BenchmarkStreamScanner/strip=true/usage_null/bulk-2         	    1000	    253651 ns/op	1151.72 MB/s	    8376 B/op	       4 allocs/op
BenchmarkRecorder/record-2   	 5000000	       240.1 ns/op	       0 B/op	       0 allocs/op
PASS`
	got := ParseBenchOutput(out)
	if len(got) != 2 || got[0].Name != "BenchmarkStreamScanner/strip=true/usage_null/bulk" || got[0].MBPerS != 1151.72 ||
		got[0].AllocsPerOp != 4 || got[1].NsPerOp != 240.1 {
		t.Errorf("ParseBenchOutput() = %+v", got)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {0, 1}} {
		if got := Percentile(ds, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

// TestStreamProbe_HeldBack: an upstream that keeps every other event until
// the next one is written is caught.
func TestStreamProbe_HeldBack(t *testing.T) {
	t.Parallel()
	const pace = 20 * time.Millisecond
	holding := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		var held []byte
		for i := range 6 {
			if i > 0 {
				time.Sleep(pace)
			}
			ev := []byte(chunkHead + sentField + strconv.FormatInt(time.Now().UnixNano(), 10) + "}\n\n")
			if i%2 == 0 {
				held = ev // kept until the next event
				continue
			}
			w.Write(append(held, ev...))
			rc.Flush()
		}
		io.WriteString(w, done)
	}))
	defer holding.Close()
	mock := httptest.NewServer(&Mock{})
	defer mock.Close()
	ctx := t.Context()
	if s := StreamProbe(ctx, Target{Name: "holding", URL: holding.URL}, 2, 2, 6, pace, nil); s.Errors != 0 || s.HeldBack != 6 {
		t.Errorf("holding upstream: %d errors %v, %d held back; want 0 errors and 6 (3 per stream)", s.Errors, s.ErrorText, s.HeldBack)
	}
	// The mock holds nothing back; with no stall longer than two paces, it
	// counts none. Only its errors are checked: this is not a timing test.
	if s := StreamProbe(ctx, Target{Name: "mock", URL: mock.URL}, 2, 2, 6, pace, nil); s.Errors != 0 {
		t.Errorf("mock: %d errors %v", s.Errors, s.ErrorText)
	}
}
