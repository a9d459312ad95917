// Command aiproxy-bench measures what aiproxy adds to a request, side by
// side with a bare httputil.ReverseProxy (the baseline) and nginx (when
// installed), all in front of the same fast mock OpenAI upstream, each
// server its own process on loopback:
//
//	go run ./pkg/bench/cmd/aiproxy-bench -out bench-results/
//
// It builds aiproxy with `go build`, starts the mock, the baseline, aiproxy
// and nginx, runs the phases of bench.Run (1,000 concurrent streams, open
// loop at 500 and 1,000 requests/s, closed loop, stream probes), runs the Go
// microbenchmarks, and writes results.json and results.md (the README's
// table) to -out, with every server's log under -out/logs. -profile adds CPU
// and allocation profiles of aiproxy and the baseline under load
// (-out/profile). -quick takes about a minute instead of about ten.
//
// -upstream https puts the mock behind TLS for the proxies (a self-signed
// certificate for 127.0.0.2, generated at start and trusted by aiproxy and
// the baseline through SSL_CERT_FILE); the direct target stays plain HTTP.
// -serve-arg (repeatable) passes a flag to aiproxy serve, e.g.
// -serve-arg=--upstream-http2; -baseline-h2 lets the baseline negotiate
// HTTP/2 too.
//
// The same binary is the mock, the baseline and a profiling aiproxy:
//
//	aiproxy-bench mock -listen ADDR [-latency D] [-tls-listen ADDR -tls-cert F -tls-key F [-h2=false]]
//	aiproxy-bench baseline -listen ADDR -upstream URL [-h2] [-cpuprofile F] [-memprofile F] [-pprof ADDR]
//	aiproxy-bench aiproxy [-cpuprofile F] [-memprofile F] [-pprof ADDR] -- AIPROXY-ARGS...
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	_ "expvar" // memstats for -pprof
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // for -pprof
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aiproxy/aiproxy/cmd"
	"github.com/aiproxy/aiproxy/pkg/bench"
)

func main() {
	// Children get SIGKILL when the thread that started them dies; keep it
	// the main thread.
	runtime.LockOSThread()
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "mock":
			os.Exit(runMock(os.Args[2:]))
		case "baseline":
			os.Exit(runBaseline(os.Args[2:]))
		case "aiproxy":
			os.Exit(runAiproxy(os.Args[2:]))
		}
	}
	os.Exit(runSuite(os.Args[1:]))
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// serve runs h on listen until SIGINT or SIGTERM.
func serve(listen string, h http.Handler) error {
	return serveTLS(listen, h, tlsListener{})
}

// tlsListener is an HTTPS listener beside the plain one: address,
// certificate and key files, and whether it offers HTTP/2 (ALPN h2) as
// well as HTTP/1.1.
type tlsListener struct {
	addr, cert, key string
	h2              bool
}

// serveTLS runs h on listen and, if tl.addr is set, on tl over TLS, until
// SIGINT or SIGTERM.
func serveTLS(listen string, h http.Handler, tl tlsListener) error {
	ctx, stop := signalContext()
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := bench.NewServer(h, log.New(os.Stderr, "", log.LstdFlags))
	errc := make(chan error, 2)
	if tl.addr != "" {
		tln, err := net.Listen("tcp", tl.addr)
		if err != nil {
			ln.Close()
			return err
		}
		if !tl.h2 {
			srv.Protocols = new(http.Protocols)
			srv.Protocols.SetHTTP1(true)
		}
		go func() { errc <- srv.ServeTLS(tln, tl.cert, tl.key) }()
	}
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		srv.Close()
	}
	return nil
}

func runMock(args []string) int {
	fs := flag.NewFlagSet("mock", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.2:0", "address to listen on")
	latency := fs.Duration("latency", 0, "fixed latency before every answer")
	var tl tlsListener
	fs.StringVar(&tl.addr, "tls-listen", "", "also serve HTTPS on this address (with -tls-cert and -tls-key)")
	fs.StringVar(&tl.cert, "tls-cert", "", "certificate (PEM) for -tls-listen")
	fs.StringVar(&tl.key, "tls-key", "", "key (PEM) for -tls-listen")
	fs.BoolVar(&tl.h2, "h2", true, "offer HTTP/2 as well as HTTP/1.1 on -tls-listen")
	fs.Parse(args)
	var h http.Handler = &bench.Mock{Latency: *latency}
	if tl.addr != "" {
		h = &protoCounter{next: h}
	}
	if err := serveTLS(*listen, h, tl); err != nil {
		fmt.Fprintln(os.Stderr, "mock:", err)
		return 1
	}
	return 0
}

// protocolsPath, on the mock's plain listener, answers how many requests
// came over TLS with each protocol: {"HTTP/1.1":N,"HTTP/2.0":M}.
const protocolsPath = "/_bench/upstream-protocols"

// protoCounter counts the mock's TLS requests by protocol, so that a run
// says which protocol each proxy used to the upstream.
type protoCounter struct {
	next   http.Handler
	h1, h2 atomic.Int64
}

func (c *protoCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.TLS == nil && r.URL.Path == protocolsPath:
		fmt.Fprintf(w, `{"HTTP/1.1":%d,"HTTP/2.0":%d}`, c.h1.Load(), c.h2.Load())
		return
	case r.TLS != nil && r.ProtoMajor == 2:
		c.h2.Add(1)
	case r.TLS != nil:
		c.h1.Add(1)
	}
	c.next.ServeHTTP(w, r)
}

func runBaseline(args []string) int {
	fs := flag.NewFlagSet("baseline", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.3:0", "address to listen on")
	upstream := fs.String("upstream", "", "upstream base URL")
	cpu := fs.String("cpuprofile", "", "write a CPU profile to this file")
	mem := fs.String("memprofile", "", "write an allocation profile to this file at exit")
	pp := fs.String("pprof", "", "serve net/http/pprof and expvar (memstats) on this address")
	h2 := fs.Bool("h2", false, "negotiate HTTP/2 with an HTTPS upstream that offers it (default HTTP/1.1 only)")
	fs.Parse(args)
	servePprof(*pp)
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		fmt.Fprintln(os.Stderr, "baseline: -upstream must be a URL")
		return 2
	}
	stop, err := startProfiles(*cpu, *mem)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	tr := bench.BaselineTransport()
	if *h2 {
		tr = bench.BaselineTransportH2()
	}
	err = serve(*listen, bench.NewBaselineTransport(u, log.New(os.Stderr, "", log.LstdFlags), tr))
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	return 0
}

// runAiproxy runs aiproxy's own command line in this process, with profiles.
func runAiproxy(args []string) int {
	fs := flag.NewFlagSet("aiproxy", flag.ExitOnError)
	cpu := fs.String("cpuprofile", "", "write a CPU profile to this file")
	mem := fs.String("memprofile", "", "write an allocation profile to this file at exit")
	pp := fs.String("pprof", "", "serve net/http/pprof and expvar (memstats) on this address")
	fs.Parse(args)
	servePprof(*pp)
	stop, err := startProfiles(*cpu, *mem)
	if err != nil {
		fmt.Fprintln(os.Stderr, "aiproxy:", err)
		return 1
	}
	ctx, cancel := signalContext()
	code := cmd.Execute(ctx, fs.Args(), cmd.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	cancel()
	stop()
	return code
}

// servePprof serves the default mux, where net/http/pprof and expvar
// register, on addr, for looking into a server under load by hand.
func servePprof(addr string) {
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "pprof:", err)
		}
	}()
}

func startProfiles(cpu, mem string) (func(), error) {
	var cf *os.File
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		cf = f
	}
	return func() {
		if cf != nil {
			pprof.StopCPUProfile()
			cf.Close()
		}
		if mem != "" {
			if f, err := os.Create(mem); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}
	}, nil
}

type suite struct {
	ctx     context.Context
	out     string
	tmp     string
	self    string
	root    string // the module's directory
	aiproxy string // binary
	procs   []*bench.Proc
	logw    io.Writer
	tls     bool // -upstream https
	h2      bool // -upstream-h2
	// serveArgs are added to aiproxy serve's command line (-serve-arg);
	// baseH2 lets the baseline negotiate HTTP/2 (-baseline-h2).
	serveArgs []string
	baseH2    bool
	// pgDSN, when set, adds aiproxy on that PostgreSQL database
	// (-postgres) as the target aiproxy-postgres.
	pgDSN string
	// profileTime is how long -profile loads each server (-profile-time).
	profileTime time.Duration
	// upstream is the base URL the proxies reach the mock at (the TLS
	// listener with -upstream https), upHost its host:port (aiproxy's
	// provider), upEnv the environment that makes the proxies trust it.
	upstream string
	upHost   string
	upEnv    []string
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.logw, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (s *suite) start(name string, argv ...string) (*bench.Proc, error) {
	return s.startEnv(name, nil, argv...)
}

// startEnv starts argv with env added to the driver's environment.
func (s *suite) startEnv(name string, env []string, argv ...string) (*bench.Proc, error) {
	p, err := bench.StartProc(name, filepath.Join(s.out, "logs", name+".log"), argv, env)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	return p, nil
}

func (s *suite) stopAll() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].Stop(5 * time.Second)
	}
	s.procs = nil
}

func runSuite(args []string) int {
	fs := flag.NewFlagSet("aiproxy-bench", flag.ContinueOnError)
	out := fs.String("out", "bench-results", "directory for results.json, results.md, logs and profiles")
	quick := fs.Bool("quick", false, "a run of about a minute: shorter phases, one round, short microbenchmarks")
	profile := fs.Bool("profile", false, "also record CPU and allocation profiles of aiproxy and the baseline under load")
	profileTime := fs.Duration("profile-time", 0, "with -profile: how long each server is profiled at 1000 requests/s (default 10s, 4s with -quick)")
	micro := fs.Bool("micro", true, "also run the Go microbenchmarks of the request path")
	nginx := fs.String("nginx", "auto", `nginx binary: "auto" uses it when installed, "off" skips it`)
	bin := fs.String("aiproxy", "", "aiproxy binary to measure (default: go build the module)")
	latency := fs.Duration("latency", 0, "the mock's fixed latency before every answer")
	streams := fs.Int("streams", 0, "concurrent streams (default 1000)")
	rates := fs.String("rates", "", "open-loop rates, comma-separated (default 500,1000)")
	keep := fs.Bool("keep", false, "keep the temporary directory (database, nginx config)")
	nice := fs.Int("nice", -10, "scheduling priority of the benchmark and its servers (negative needs root; 0 leaves it), so that other work on the machine disturbs the figures less")
	upScheme := fs.String("upstream", "http", `how the proxies reach the mock: "http", or "https" (self-signed certificate for 127.0.0.2, trusted through SSL_CERT_FILE; the direct target stays plain HTTP)`)
	upH2 := fs.Bool("upstream-h2", true, "with -upstream https: the mock offers HTTP/2 (ALPN h2) as well as HTTP/1.1, as providers do; the baseline speaks HTTP/1.1 either way")
	var serveArgs stringList
	fs.Var(&serveArgs, "serve-arg", "an extra argument for aiproxy serve, e.g. -serve-arg=--upstream-http2 (repeatable)")
	baseH2 := fs.Bool("baseline-h2", false, "with -upstream https: the baseline negotiates HTTP/2 when offered, instead of HTTP/1.1 with its pool")
	pgDSN := fs.String("postgres", "", "also measure aiproxy on this PostgreSQL database (postgres://…, an empty database) as aiproxy-postgres, against aiproxy on SQLite in the same run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *upScheme != "http" && *upScheme != "https" {
		fmt.Fprintln(os.Stderr, `aiproxy-bench: -upstream is "http" or "https"`)
		return 2
	}
	if *nice != 0 {
		if err := bench.Renice(*nice); err != nil {
			fmt.Fprintf(os.Stderr, "aiproxy-bench: -nice %d: %v (going on without)\n", *nice, err)
			*nice = 0
		}
	}
	cfg := bench.FullConfig()
	if *quick {
		cfg = bench.QuickConfig()
	}
	if *streams > 0 {
		cfg.MassStreams = *streams
	}
	if *rates != "" {
		cfg.Rates = nil
		for _, f := range strings.Split(*rates, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				fmt.Fprintln(os.Stderr, "aiproxy-bench: -rates wants positive integers")
				return 2
			}
			cfg.Rates = append(cfg.Rates, n)
		}
	}
	cfg.Progress = os.Stderr

	ctx, stop := signalContext()
	defer stop()
	s := &suite{ctx: ctx, out: *out, logw: os.Stderr, tls: *upScheme == "https", h2: *upH2, serveArgs: serveArgs, baseH2: *baseH2,
		profileTime: *profileTime, pgDSN: *pgDSN}
	defer s.stopAll()
	rep, err := s.run(cfg, *quick, *profile, *micro, *nginx, *bin, *latency, *keep, *nice)
	if rep != nil {
		if werr := s.write(rep); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "aiproxy-bench:", err)
		return 1
	}
	return 0
}

func (s *suite) run(cfg bench.Config, quick, profile, micro bool, nginx, bin string, latency time.Duration, keep bool, nice int) (*bench.Report, error) {
	for _, d := range []string{s.out, filepath.Join(s.out, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp("", "aiproxy-bench-")
	if err != nil {
		return nil, err
	}
	s.tmp = tmp
	if !keep {
		defer os.RemoveAll(tmp)
	} else {
		s.logf("temporary files in %s", tmp)
	}
	if s.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if lim, err := bench.RaiseFDLimit(); err == nil && lim < uint64(4*cfg.MassStreams+1000) {
		s.logf("open-file limit %d is low for %d streams", lim, cfg.MassStreams)
	}
	if err := s.findRoot(); err != nil && (bin == "" || micro) {
		return nil, err
	}
	if bin == "" {
		bin = filepath.Join(tmp, "aiproxy")
		s.logf("building aiproxy")
		if err := s.goCmd(nil, "build", "-o", bin, "."); err != nil {
			return nil, fmt.Errorf("go build aiproxy: %w", err)
		}
	}
	s.aiproxy = bin

	mockAddr, err := bench.FreeAddr("127.0.0.2")
	if err != nil {
		return nil, fmt.Errorf("loopback address 127.0.0.2: %w", err)
	}
	mockArgs := []string{s.self, "mock", "-listen", mockAddr, "-latency", latency.String()}
	s.upHost, s.upstream = mockAddr, "http://"+mockAddr
	if s.tls {
		tlsAddr, err := bench.FreeAddr("127.0.0.2")
		for err == nil && tlsAddr == mockAddr {
			tlsAddr, err = bench.FreeAddr("127.0.0.2")
		}
		if err != nil {
			return nil, err
		}
		cert, key, err := bench.WriteSelfSigned(tmp, "127.0.0.2")
		if err != nil {
			return nil, fmt.Errorf("self-signed certificate: %w", err)
		}
		mockArgs = append(mockArgs, "-tls-listen", tlsAddr, "-tls-cert", cert, "-tls-key", key, "-h2="+strconv.FormatBool(s.h2))
		s.upHost, s.upstream = tlsAddr, "https://"+tlsAddr
		s.upEnv = []string{"SSL_CERT_FILE=" + cert}
		s.logf("upstream https://%s (HTTP/2 offered: %v), trusted through SSL_CERT_FILE=%s", tlsAddr, s.h2, cert)
	}
	mock, err := s.start("mock", mockArgs...)
	if err != nil {
		return nil, err
	}
	if err := bench.WaitReady(s.ctx, mock, mockAddr, 10*time.Second); err != nil {
		return nil, err
	}
	targets := []bench.Target{{Name: "direct", URL: "http://" + mockAddr, PIDs: pids(mock)}}

	baseAddr, _ := bench.FreeAddr("127.0.0.3")
	base, err := s.startEnv("baseline", s.upEnv, s.baselineArgv(baseAddr)...)
	if err != nil {
		return nil, err
	}
	if err := bench.WaitReady(s.ctx, base, baseAddr, 10*time.Second); err != nil {
		return nil, err
	}
	targets = append(targets, bench.Target{Name: "baseline", URL: "http://" + baseAddr, PIDs: pids(base)})

	db := filepath.Join(tmp, "aiproxy.db")
	keys, err := s.setupAiproxy(db, nil)
	if err != nil {
		return nil, err
	}
	aiAddr, _ := bench.FreeAddr("127.0.0.4")
	ai, err := s.startEnv("aiproxy", s.upEnv, append([]string{s.aiproxy, "--db", db, "serve", "--listen", aiAddr, "--default-provider", s.upHost, "--shutdown-grace", "2s"}, s.serveArgs...)...)
	if err != nil {
		return nil, err
	}
	if err := bench.WaitReady(s.ctx, ai, "http://"+aiAddr+"/healthz", 15*time.Second); err != nil {
		return nil, err
	}
	targets = append(targets, bench.Target{Name: "aiproxy", URL: "http://" + aiAddr, Keys: keys, PIDs: pids(ai)})
	if s.pgDSN != "" {
		t, err := s.startPostgres()
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}

	var notes []string
	if s.tls && nginx != "off" {
		notes = append(notes, "nginx not measured: its configuration here is for a plain-HTTP upstream")
		nginx = "off"
	}
	if nginx != "off" {
		t, err := s.startNginx(nginx, mockAddr)
		switch {
		case err == nil:
			targets = append(targets, t)
		case nginx == "auto":
			notes = append(notes, "nginx not measured: "+err.Error())
			s.logf("%s", notes[len(notes)-1])
		default:
			return nil, err
		}
	}

	res, runErr := bench.Run(s.ctx, cfg, targets)
	rep := bench.NewReport(res)
	rep.Notes = notes
	rep.Host = hostInfo(quick, latency, bin)
	rep.Host["nice"] = nice
	rep.Host["upstream"] = strings.SplitN(s.upstream, ":", 2)[0]
	rep.Host["serve_args"] = s.serveArgs
	rep.Host["baseline_h2"] = s.baseH2
	if s.tls {
		rep.Host["upstream_h2_offered"] = s.h2
		if counts, err := upstreamProtocols(mockAddr); err == nil {
			rep.Host["upstream_protocols"] = counts
			notes = append(notes, fmt.Sprintf("upstream over TLS (HTTP/2 offered: %v); requests the mock answered over TLS: %d over HTTP/1.1, %d over HTTP/2 (extra serve arguments %q; baseline may negotiate HTTP/2: %v)",
				s.h2, counts["HTTP/1.1"], counts["HTTP/2.0"], s.serveArgs, s.baseH2))
		} else {
			s.logf("upstream protocols: %v", err)
		}
		rep.Notes = notes
	}
	if runErr != nil {
		return rep, runErr
	}
	for _, p := range s.procs {
		if p.Exited() {
			return rep, fmt.Errorf("%s exited during the run (see %s)", p.Name, filepath.Join(s.out, "logs", p.Name+".log"))
		}
	}
	if micro {
		m, err := s.micro(quick)
		if err != nil {
			return rep, err
		}
		rep.AddMicro(m)
	}
	if profile {
		ai.Stop(5 * time.Second) // one serve per database
		if err := s.profile(quick, s.profileTime, db, keys); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// upstreamProtocols asks the mock how many TLS requests it answered over
// each protocol.
func upstreamProtocols(mockAddr string) (map[string]int64, error) {
	res, err := http.Get("http://" + mockAddr + protocolsPath)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var m map[string]int64
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// baselineArgv is the baseline's command line on addr.
func (s *suite) baselineArgv(addr string) []string {
	argv := []string{s.self, "baseline", "-listen", addr, "-upstream", s.upstream}
	if s.baseH2 {
		argv = append(argv, "-h2")
	}
	return argv
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func pids(p *bench.Proc) func() []int {
	return func() []int { return []int{p.PID()} }
}

// findRoot finds the aiproxy module's directory from the working directory.
func (s *suite) findRoot() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return errors.New("run aiproxy-bench from inside the aiproxy module (or pass -aiproxy and -micro=false)")
	}
	s.root = filepath.Dir(mod)
	return nil
}

func (s *suite) goCmd(stdout io.Writer, args ...string) error {
	c := exec.CommandContext(s.ctx, "go", args...)
	c.Dir = s.root
	c.Stdout, c.Stderr = stdout, os.Stderr
	if stdout == nil {
		c.Stdout = os.Stderr
	}
	return c.Run()
}

// benchSecret is the AIPROXY_SECRET_KEY of aiproxy on PostgreSQL (base64
// of 32 bytes), which needs one.
const benchSecret = "YWlwcm94eS1iZW5jaCBwb3N0Z3JlcyBzZWNyZXQhISE="

// startPostgres starts aiproxy on s.pgDSN, set up as aiproxy on SQLite is.
func (s *suite) startPostgres() (bench.Target, error) {
	env := append([]string{"AIPROXY_SECRET_KEY=" + benchSecret}, s.upEnv...)
	keys, err := s.setupAiproxy(s.pgDSN, env)
	if err != nil {
		return bench.Target{}, err
	}
	addr, _ := bench.FreeAddr("127.0.0.7")
	p, err := s.startEnv("aiproxy-postgres", env, append([]string{s.aiproxy, "--db", s.pgDSN, "serve", "--listen", addr,
		"--default-provider", s.upHost, "--shutdown-grace", "2s"}, s.serveArgs...)...)
	if err != nil {
		return bench.Target{}, err
	}
	if err := bench.WaitReady(s.ctx, p, "http://"+addr+"/healthz", 15*time.Second); err != nil {
		return bench.Target{}, err
	}
	return bench.Target{Name: "aiproxy-postgres", URL: "http://" + addr, Keys: keys, PIDs: pids(p)}, nil
}

// setupAiproxy registers the mock (s.upHost at s.upstream) as a provider and
// makes ten users with the aiproxy CLI on db (env added to its
// environment), and returns their keys.
func (s *suite) setupAiproxy(db string, env []string) ([]string, error) {
	run := func(args ...string) (string, error) {
		c := exec.CommandContext(s.ctx, s.aiproxy, append([]string{"--db", db}, args...)...)
		c.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			return "", fmt.Errorf("aiproxy %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := run("provider", "add", s.upHost, "sk-bench-upstream-0123456789abcdef", "--base-url", s.upstream); err != nil {
		return nil, err
	}
	var keys []string
	for i := range 10 {
		k, err := run("user", "create", fmt.Sprintf("bench%d", i))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (s *suite) startNginx(bin, mockAddr string) (bench.Target, error) {
	if bin == "auto" {
		p, err := exec.LookPath("nginx")
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
				return bench.Target{}, errors.New("nginx is not installed (apt-get install nginx-light)")
			}
			p = "/usr/sbin/nginx"
		}
		bin = p
	}
	dir := filepath.Join(s.tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bench.Target{}, err
	}
	addr, _ := bench.FreeAddr("127.0.0.5")
	conf := bench.NginxConfig(dir, addr, mockAddr, runtime.NumCPU(), os.Geteuid() == 0)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return bench.Target{}, err
	}
	p, err := s.start("nginx", bin, "-p", dir, "-c", path, "-g", "daemon off;")
	if err != nil {
		return bench.Target{}, err
	}
	if err := bench.WaitReady(s.ctx, p, addr, 10*time.Second); err != nil {
		return bench.Target{}, err
	}
	return bench.Target{Name: "nginx", URL: "http://" + addr, PIDs: func() []int { return bench.NginxPIDs(p.PID()) }}, nil
}

// microBenchmarks are the request path's Go benchmarks, by package.
var microBenchmarks = []struct{ pkg, pattern string }{
	{"./pkg/store", "BenchmarkAuthenticate"},
	{"./pkg/proxy", "BenchmarkProviderSelection|BenchmarkServe"},
	{"./pkg/bench", "BenchmarkBaselineServe"},
	{"./pkg/openai", "BenchmarkStreamScanner|BenchmarkInspectRequest"},
	{"./pkg/usage", "BenchmarkRecorder"},
	{"./pkg/logbuf", "BenchmarkWrite"},
	{"./pkg/limits", "BenchmarkReserveSettle"},
	{"./pkg/metrics", "BenchmarkRequestDone"},
	{"./pkg/seal", "BenchmarkOpen"},
	{"./pkg/models", "BenchmarkList_TenProvidersCached"},
	{"./pkg/server", "BenchmarkUnauthenticated"},
}

func (s *suite) micro(quick bool) ([]bench.MicroResult, error) {
	var all bytes.Buffer
	for _, m := range microBenchmarks {
		if _, err := os.Stat(filepath.Join(s.root, m.pkg)); err != nil {
			s.logf("%s: not in this tree, skipped", m.pkg)
			continue
		}
		args := []string{"test", "-run", "^$", "-bench", m.pattern, "-benchmem", "-count", "1"}
		if quick {
			args = append(args, "-short", "-benchtime", "200ms")
		}
		args = append(args, m.pkg)
		s.logf("go %s", strings.Join(args, " "))
		var out bytes.Buffer
		err := s.goCmd(io.MultiWriter(&out, &all), args...)
		if err != nil {
			return nil, fmt.Errorf("microbenchmarks in %s: %w", m.pkg, err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.out, "micro.txt"), all.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return bench.ParseBenchOutput(all.String()), nil
}

// profile runs aiproxy (its command line inside this binary, to add
// profiling) and then the baseline under the same load, recording CPU and
// allocation profiles of each, and their tops as text.
func (s *suite) profile(quick bool, d time.Duration, db string, keys []string) error {
	dir := filepath.Join(s.out, "profile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	switch {
	case d > 0:
	case quick:
		d = 4 * time.Second
	default:
		d = 10 * time.Second
	}
	for _, name := range []string{"aiproxy", "baseline"} {
		cpu, mem := filepath.Join(dir, name+".cpu.pprof"), filepath.Join(dir, name+".allocs.pprof")
		addr, _ := bench.FreeAddr("127.0.0.6")
		var argv []string
		var ready string
		if name == "aiproxy" {
			argv = append([]string{s.self, "aiproxy", "-cpuprofile", cpu, "-memprofile", mem, "--",
				"--db", db, "serve", "--listen", addr, "--default-provider", s.upHost, "--shutdown-grace", "2s"}, s.serveArgs...)
			ready = "http://" + addr + "/healthz"
		} else {
			argv = append(s.baselineArgv(addr), "-cpuprofile", cpu, "-memprofile", mem)
			ready = addr
		}
		p, err := s.startEnv(name+"-profiled", s.upEnv, argv...)
		if err != nil {
			return err
		}
		if err := bench.WaitReady(s.ctx, p, ready, 15*time.Second); err != nil {
			return err
		}
		t := bench.Target{Name: name, URL: "http://" + addr, Keys: keys, PIDs: pids(p)}
		s.logf("profiling %s: 1000 requests/s for %s, then streams", name, d)
		ls := bench.OpenLoop(s.ctx, t, 1000, d, bench.Sources())
		ss := bench.StreamProbe(s.ctx, t, 100, 20, 20, 10*time.Millisecond, bench.Sources())
		s.logf("profiling %s: %d requests (%d errors), %d streams (%d errors)", name, ls.Requests, ls.Errors, ss.Streams, ss.Errors)
		if err := p.Stop(10 * time.Second); err != nil {
			s.logf("%s: %v", p.Name, err)
		}
		for _, top := range []struct {
			file, prof string
			args       []string
		}{
			{name + ".cpu.top.txt", cpu, nil},
			{name + ".cpu.cum.txt", cpu, []string{"-cum"}},
			{name + ".allocs.top.txt", mem, []string{"-sample_index=alloc_space"}},
			{name + ".allocs.objects.txt", mem, []string{"-sample_index=alloc_objects"}},
		} {
			var out bytes.Buffer
			args := append([]string{"tool", "pprof", "-top", "-nodecount=40"}, top.args...)
			args = append(args, s.self, top.prof)
			if err := s.goCmd(&out, args...); err != nil {
				return fmt.Errorf("go tool pprof: %w", err)
			}
			if err := os.WriteFile(filepath.Join(dir, top.file), out.Bytes(), 0o644); err != nil {
				return err
			}
		}
	}
	s.logf("profiles in %s", dir)
	return nil
}

func hostInfo(quick bool, latency time.Duration, bin string) map[string]any {
	h := map[string]any{
		"go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH, "cpus": runtime.NumCPU(),
		"quick": quick, "mock_latency": latency.String(),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h["kernel"] = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		h["aiproxy"] = strings.TrimSpace(string(out))
	}
	return h
}

func (s *suite) write(rep *bench.Report) error {
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.out, "results.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	md := rep.Markdown()
	if err := os.WriteFile(filepath.Join(s.out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	s.logf("results in %s", s.out)
	return nil
}
