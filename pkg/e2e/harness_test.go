//go:build unix

package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// Timeouts of the harness. A CLI command that runs longer than cliTimeout
// is a hang and fails the test.
const (
	cliTimeout   = 60 * time.Second
	startTimeout = 15 * time.Second
	stopTimeout  = 20 * time.Second
	fakeHost     = "fake.test"
)

// env is one database file with a fake upstream registered as provider
// fakeHost, and the aiproxy binary to run on it.
type env struct {
	t    *testing.T
	bin  string
	dir  string
	db   string
	fake *fakeai.Server
	up   *httptest.Server
	// extraEnv is added to the environment of every aiproxy process.
	extraEnv []string
}

// newEnv makes a database in a new temporary folder and registers a fake
// upstream on it.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvAt(t, filepath.Join(t.TempDir(), "data", "aiproxy.db"))
}

// newEnvAt is newEnv with a chosen database path.
func newEnvAt(t *testing.T, db string) *env {
	t.Helper()
	e := &env{t: t, bin: binary(t), dir: filepath.Dir(db), db: db, fake: fakeai.New()}
	e.up = httptest.NewServer(e.fake)
	t.Cleanup(func() {
		e.up.CloseClientConnections()
		e.up.Close()
	})
	e.mustCLI("provider", "add", fakeHost, "sk-upstream-secret", "--base-url", e.up.URL)
	return e
}

// processEnv is the environment of every aiproxy process: the test's own,
// without anything that would configure aiproxy or route its traffic.
func processEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "AIPROXY_"), k == "ACCESS_TOKEN", k == "OPENAI_API_KEY", k == "OPENAPI_API_KEY",
			strings.EqualFold(k, "HTTP_PROXY"), strings.EqualFold(k, "HTTPS_PROXY"), strings.EqualFold(k, "ALL_PROXY"),
			k == helperEnv, k == "GORACE":
			continue
		}
		out = append(out, kv)
	}
	if raceEnabled {
		// The race runtime sleeps 1 s at exit by default, which would make
		// every CLI command take a second.
		out = append(out, "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	}
	return out
}

// cliResult is what one CLI command did.
type cliResult struct {
	args   []string
	stdout string
	stderr string
	code   int // exit code; -1 when killed by a signal
	dur    time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("aiproxy %s: exit %d after %v, stdout %q, stderr %q",
		strings.Join(r.args, " "), r.code, r.dur.Round(time.Millisecond), r.stdout, r.stderr)
}

// command returns an unstarted `aiproxy --db DB args...`.
func (e *env) command(args ...string) *exec.Cmd {
	cmd := exec.Command(e.bin, append([]string{"--db", e.db}, args...)...)
	cmd.Env = append(processEnv(), e.extraEnv...)
	cmd.WaitDelay = 5 * time.Second
	orphanProof(cmd)
	return cmd
}

// cli runs one CLI command to its end (at most cliTimeout).
func (e *env) cli(args ...string) cliResult {
	e.t.Helper()
	return runCmd(e.t, e.command(args...), args)
}

func runCmd(t *testing.T, cmd *exec.Cmd, args []string) cliResult {
	t.Helper()
	r := runUntil(t, cmd, cliTimeout)
	if r.code == hung {
		t.FailNow() // a hang: runUntil said so
	}
	r.args = args
	return r
}

// hung is the exit code runUntil reports for a command it had to kill.
const hung = -1 << 16

// runUntil runs cmd to its end; one still running after timeout is killed,
// reported as an error and returned with code hung.
func runUntil(t *testing.T, cmd *exec.Cmd, timeout time.Duration) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	code := 0
	select {
	case err = <-done:
		code = exitCode(err)
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Errorf("%v still running after %v (a hang); stderr %q", cmd.Args, timeout, errb.String())
		code = hung
	}
	return cliResult{args: cmd.Args[1:], stdout: out.String(), stderr: errb.String(), dur: time.Since(start), code: code}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -2
}

// mustCLI runs a CLI command that must succeed and returns its stdout.
func (e *env) mustCLI(args ...string) string {
	e.t.Helper()
	r := e.cli(args...)
	if r.code != 0 {
		e.t.Fatalf("%v, want exit 0", r)
	}
	return r.stdout
}

// createUser creates user name through the CLI and returns its key.
func (e *env) createUser(name string) string {
	e.t.Helper()
	return strings.TrimSpace(e.mustCLI("user", "create", name))
}

// logSink collects a process's log lines and lets a test wait for one.
type logSink struct {
	mu      sync.Mutex
	buf     []byte
	lines   []string
	changed chan struct{}
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// Lines returns the complete lines so far.
func (l *logSink) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n") + "\n" + string(l.buf)
}

// waitLine returns the first line from index from on for which match is
// true, or false when stop is closed or timeout passes first.
func (l *logSink) waitLine(from int, match func(string) bool, stop <-chan struct{}, timeout time.Duration) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for ; from < len(l.lines); from++ {
			if match(l.lines[from]) {
				s := l.lines[from]
				l.mu.Unlock()
				return s, true
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			// Take what the process wrote before it ended.
			l.mu.Lock()
			n := len(l.lines)
			l.mu.Unlock()
			if from == n {
				return "", false
			}
		case <-deadline.C:
			return "", false
		}
	}
}

// serveProc is one running `aiproxy serve`.
type serveProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	addr  string
	logs  *logSink
	done  chan struct{} // closed when the process has exited
	err   error         // Wait's error, once done is closed
	since time.Time
}

// serve starts `aiproxy serve` on a free loopback port and waits for its
// first log line. The process is stopped in t.Cleanup.
func (e *env) serve(extra ...string) *serveProc {
	e.t.Helper()
	s, first, err := e.startServe(extra...)
	if err != nil {
		e.t.Fatalf("serve: %v (first line %q)\n%s", err, first, s.logs)
	}
	return s
}

// startServe starts serve and reports an error when it exits or writes a
// first line without its address.
func (e *env) startServe(extra ...string) (*serveProc, string, error) {
	e.t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace", "2s"}, extra...)
	cmd := e.command(args...)
	s := &serveProc{t: e.t, cmd: cmd, logs: newLogSink(), done: make(chan struct{}), since: time.Now()}
	cmd.Stderr = s.logs
	cmd.Stdout = s.logs
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start serve: %v", err)
	}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	e.t.Cleanup(s.cleanup)
	first, ok := s.logs.waitLine(0, func(string) bool { return true }, s.done, startTimeout)
	if !ok {
		exited := s.exited()
		if !exited {
			s.cmd.Process.Kill()
		}
		<-s.done
		return s, "", fmt.Errorf("no first log line within %v (exited by itself: %v)", startTimeout, exited)
	}
	var m struct{ Listen, DB string }
	if err := json.Unmarshal([]byte(first), &m); err != nil || m.Listen == "" {
		return s, first, fmt.Errorf("first log line is not JSON with listen")
	}
	if m.DB != e.db && m.DB != store.RedactDSN(e.db) {
		return s, first, fmt.Errorf("first log line names db %q, want %q", m.DB, e.db)
	}
	s.addr = m.Listen
	return s, first, nil
}

func (s *serveProc) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// kill9 kills the server with SIGKILL and waits for it to be gone.
func (s *serveProc) kill9() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.t.Fatalf("serve still running %v after SIGKILL", stopTimeout)
	}
}

// stop ends the server with SIGTERM (SIGKILL after stopTimeout).
func (s *serveProc) stop() {
	s.t.Helper()
	if s.exited() {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("serve did not stop within %v of SIGTERM", stopTimeout)
	}
}

func (s *serveProc) cleanup() {
	if !s.exited() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	if strings.Contains(s.logs.String(), "WARNING: DATA RACE") {
		s.t.Errorf("serve reported a data race:\n%s", s.logs)
	}
}

// logged returns the server's log lines that contain any of words,
// case-insensitively, leaving out the database path (which holds the
// test's name).
func (s *serveProc) logged(words ...string) []string {
	var out []string
	db := s.cmd.Args[2]
	for _, l := range s.logs.Lines() {
		ll := strings.ToLower(strings.ReplaceAll(l, db, "DB"))
		for _, w := range words {
			if strings.Contains(ll, w) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// client is the tests' HTTP client towards aiproxy.
var client = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	},
}

// loadClient is the load generator's: one connection per request, closed
// after it. With a pool, Go's transport dials a spare connection when every
// pooled one is busy and parks it unused; serve's graceful stop then waits
// (up to 5 s, net/http's rule for a connection that never sent a request)
// for a connection no request will ever come on.
var loadClient = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		Proxy:             nil,
		DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableKeepAlives: true,
	},
}

// reply is one HTTP answer.
type reply struct {
	status int
	body   string
	dur    time.Duration
}

// proxied sends one chat completion through aiproxy at addr with key,
// asking the fake upstream for mode.
func proxied(ctx context.Context, addr, key, mode string) (reply, error) {
	return proxiedWith(ctx, client, addr, key, mode)
}

// proxiedWith is proxied through c.
func proxiedWith(ctx context.Context, c *http.Client, addr, key, mode string) (reply, error) {
	return sendWith(ctx, c, "POST", "http://"+addr+"/v1/chat/completions",
		`{"model":"gpt-fake","messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"Authorization": "Bearer " + key, "X-Host-Final": fakeHost, "X-Fake-Mode": mode,
			"Content-Type": "application/json"})
}

func send(ctx context.Context, method, url, body string, hdr map[string]string) (reply, error) {
	return sendWith(ctx, client, method, url, body, hdr)
}

func sendWith(ctx context.Context, c *http.Client, method, url, body string, hdr map[string]string) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, body: string(b), dur: time.Since(start)}, err
}

// mustProxy sends one `ok` request that must answer 200.
func mustProxy(t *testing.T, addr, key string) {
	t.Helper()
	r, err := proxied(t.Context(), addr, key, "ok")
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("proxied request with key %s… = %d %q, %v; want 200", key[:10], r.status, r.body, err)
	}
}

// openRaw opens the database file directly, as another process would.
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	d, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// integrity runs PRAGMA integrity_check on a database file through a new
// connection, which also recovers a WAL left by a killed process.
func integrity(t *testing.T, path string) string {
	t.Helper()
	d, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rows, err := d.QueryContext(t.Context(), "PRAGMA integrity_check")
	if err != nil {
		return "error: " + err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return "error: " + err.Error()
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return "error: " + err.Error()
	}
	return strings.Join(out, "; ")
}

// queryInt runs a query that returns one integer.
func queryInt(t *testing.T, d *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := d.QueryRowContext(t.Context(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// poll calls cond until it returns true or timeout passes, and reports
// which happened.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testRand returns a seeded random source and logs the seed, which
// AIPROXY_E2E_SEED replays.
func testRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("AIPROXY_E2E_SEED"); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil {
			seed = v
		}
	}
	t.Logf("random seed %d (replay with AIPROXY_E2E_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// percentile returns the p-th percentile (0 < p <= 1) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// fileSize is the size of path, 0 when it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
