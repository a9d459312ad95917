package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/limits"
	"github.com/aiproxy/aiproxy/pkg/logbuf"
	"github.com/aiproxy/aiproxy/pkg/metrics"
	"github.com/aiproxy/aiproxy/pkg/models"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

// serveOptions are serve's flags, filled from the command line, then the
// environment, then the config file (appContext.configure).
type serveOptions struct {
	Listen, AccessToken, DefaultProvider string
	CORSOrigins                          []string
	MaxBody                              int64
	HeaderTimeout, DialTimeout           time.Duration
	IdleTimeout, ShutdownGrace           time.Duration
	DenyPrivate                          bool
	LogLevel, LogFormat                  string
	UsageRetention                       string
	UpstreamHTTP2                        bool
	DefaultReserve                       int64
	Metrics, MetricsPerUser              bool
}

// serveConfig is everything serve runs with, resolved and checked in one
// place (resolveServe) from the flags and the environment.
type serveConfig struct {
	Listen        string
	AccessToken   string // "": the admin routes are off
	TokenOnArgv   bool   // --access-token was on the command line
	CORSOrigins   []string
	ShutdownGrace time.Duration
	LogLevel      slog.Level
	LogFormat     string // "text", "json", or "" for text on a terminal
	Proxy         proxy.Config

	// UsageRetention is how long usage rows are kept whole before they
	// are folded into daily totals (store.Retention).
	UsageRetention time.Duration
	// DefaultReserve is the output reserved for a limited user's request
	// that names no maximum.
	DefaultReserve int64
	// Metrics serves GET /metrics; MetricsPerUser adds per-user series.
	Metrics, MetricsPerUser bool
}

func newServeCmd(app *appContext) *cobra.Command {
	var opts serveOptions
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := app.resolveServe(opts, c.Flags().Changed("access-token"))
			if err != nil {
				return err
			}
			return runServe(c.Context(), app, c.ErrOrStderr(), cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&opts.Listen, "listen", "127.0.0.1:8787", "address to listen on")
	f.StringVar(&opts.AccessToken, "access-token", "", "admin token; empty turns the HTTP admin routes off. Prefer AIPROXY_ACCESS_TOKEN (or ACCESS_TOKEN) or access-token in a --config file: a flag is visible to other users in the process list")
	f.StringVar(&opts.DefaultProvider, "default-provider", "api.openai.com", "provider for requests without X-Host-Final")
	f.StringSliceVar(&opts.CORSOrigins, "cors-origins", nil, "origins allowed to call the proxy from a browser (default any)")
	f.Int64Var(&opts.MaxBody, "max-body", 32<<20, "largest request body in bytes")
	f.DurationVar(&opts.HeaderTimeout, "upstream-header-timeout", 10*time.Minute, "longest wait for an upstream's response headers")
	f.DurationVar(&opts.DialTimeout, "upstream-dial-timeout", 10*time.Second, "longest wait to connect to an upstream")
	f.DurationVar(&opts.IdleTimeout, "stream-idle-timeout", 5*time.Minute, "abort a response whose upstream sends nothing for this long")
	f.DurationVar(&opts.ShutdownGrace, "shutdown-grace", 25*time.Second, "how long in-flight requests may finish after SIGTERM")
	f.BoolVar(&opts.DenyPrivate, "deny-private-upstreams", false, "refuse upstreams whose address is loopback, private or link-local (checked at dial time)")
	f.StringVar(&opts.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&opts.LogFormat, "log-format", "", "text or json (default text on a terminal, json otherwise)")
	f.StringVar(&opts.UsageRetention, "usage-retention", "400d", "keep usage rows this long (at least 1d), then fold them into daily totals that stats still reads")
	f.BoolVar(&opts.UpstreamHTTP2, "upstream-http2", false, "speak HTTP/2 to HTTPS providers that offer it (default HTTP/1.1 with a pool of connections)")
	f.Int64Var(&opts.DefaultReserve, "default-reserve", limits.DefaultReserve, "output tokens reserved against a limited user's budget when a request names no max_tokens")
	f.BoolVar(&opts.Metrics, "metrics", false, "serve Prometheus metrics at /metrics (admin token or a loopback client)")
	f.BoolVar(&opts.MetricsPerUser, "metrics-per-user", false, "with --metrics, also per-user series (one series per user: mind the cardinality)")
	return c
}

// resolveServe checks serve's options and turns them, with OPENAI_API_KEY
// and the other variables serve reads, into its config. tokenOnArgv says
// whether --access-token was on the command line.
func (a *appContext) resolveServe(o serveOptions, tokenOnArgv bool) (serveConfig, error) {
	cfg := serveConfig{
		Listen:        o.Listen,
		AccessToken:   o.AccessToken,
		TokenOnArgv:   tokenOnArgv && o.AccessToken != "",
		CORSOrigins:   o.CORSOrigins,
		ShutdownGrace: o.ShutdownGrace,
		Proxy: proxy.Config{
			DefaultProvider: o.DefaultProvider,
			Fallback:        a.envFallback(),
			MaxBody:         o.MaxBody,
			DialTimeout:     o.DialTimeout,
			HeaderTimeout:   o.HeaderTimeout,
			IdleTimeout:     o.IdleTimeout,
			DenyPrivate:     o.DenyPrivate,
			HTTP2:           o.UpstreamHTTP2,
		},
		DefaultReserve: o.DefaultReserve,
		Metrics:        o.Metrics || o.MetricsPerUser,
		MetricsPerUser: o.MetricsPerUser,
	}
	if o.DefaultReserve <= 0 {
		return cfg, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %d: want a positive number of tokens", a.source("default-reserve"), o.DefaultReserve)
	}
	if err := checkToken(cfg.AccessToken); err != nil {
		return cfg, err
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return cfg, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %q: want debug, info, warn or error", a.source("log-level"), o.LogLevel)
	}
	switch o.LogFormat {
	case "", "text", "json":
		cfg.LogFormat = o.LogFormat
	default:
		return cfg, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %q: want text or json", a.source("log-format"), o.LogFormat)
	}
	if o.MaxBody <= 0 {
		return cfg, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %d: want a positive number of bytes", a.source("max-body"), o.MaxBody)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"upstream-header-timeout", o.HeaderTimeout},
		{"upstream-dial-timeout", o.DialTimeout},
		{"stream-idle-timeout", o.IdleTimeout},
		{"shutdown-grace", o.ShutdownGrace},
	} {
		if d.v < 0 {
			return cfg, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %s: want a duration of zero or more", a.source(d.name), d.v)
		}
	}
	keep, err := parseRetention(o.UsageRetention, a.source("usage-retention"))
	if err != nil {
		return cfg, err
	}
	cfg.UsageRetention = keep
	return cfg, nil
}

func runServe(ctx context.Context, app *appContext, stderr io.Writer, cfg serveConfig) error {
	// The proxy's line per request is batched (a copy instead of a write
	// system call on the request path, ~9 % of its CPU); every other line
	// is written at once, in order with them.
	out := logbuf.New(stderr, 100*time.Millisecond)
	defer out.Close()
	log := newLogger(out.Immediate(), stderr, cfg.LogLevel, cfg.LogFormat)
	reqLog := newLogger(out, stderr, cfg.LogLevel, cfg.LogFormat)
	// The store's warnings while opening follow the first line, which
	// names the database and the address.
	var early bytes.Buffer
	app.log = newLogger(&early, stderr, cfg.LogLevel, cfg.LogFormat)
	svc, err := app.service(ctx)
	app.log = log
	if err != nil {
		return err
	}
	app.db.SetLogger(log)
	release, err := app.db.ClaimServer()
	if err != nil {
		return err
	}
	defer release()
	// Only the serve that holds the claim folds old usage rows, in the
	// background, a few milliseconds of write lock at a time.
	retCtx, stopRetention := context.WithCancel(context.WithoutCancel(ctx))
	retDone := make(chan struct{})
	go func() {
		defer close(retDone)
		app.db.RunRetention(retCtx, store.Retention{Keep: cfg.UsageRetention, Log: log})
	}()
	defer func() { stopRetention(); <-retDone }()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %v", err)
	}
	token := cfg.AccessToken
	log.Info("aiproxy serving", "db", app.db.Path(), "listen", ln.Addr().String(), "admin", token != "", "secret", app.db.SecretSource())
	out.Immediate().Write(early.Bytes())
	if cfg.TokenOnArgv {
		log.Warn("--access-token is visible to every user of this machine in the process list: set AIPROXY_ACCESS_TOKEN or access-token in a --config file instead")
	}
	if token != "" && len(token) < 16 {
		log.Warn("the access token is shorter than 16 characters: use a long random one")
	}

	rec := usage.New(svc.RecordUsage, log, usage.DefaultQueue)
	var m *metrics.Metrics
	if cfg.Metrics {
		m = metrics.New(metrics.Options{PerUser: cfg.MetricsPerUser})
		rec.OnBatch = m.UsageBatch
		m.WatchUsage(rec)
	}
	cfg.Proxy.Metrics = m
	// Startup loads finish even when a signal is already pending.
	loadCtx := context.WithoutCancel(ctx)
	limOpts := []limits.Option{limits.WithDefaultReserve(cfg.DefaultReserve)}
	// On PostgreSQL every instance keeps its limited users' counters in the
	// database, so that limits hold across all of them (CONTRACT section 8).
	if ledger := app.db.NewLedger(0); ledger != nil {
		defer ledger.Close()
		limOpts = append(limOpts, limits.WithLedger(ledger))
	}
	lim, err := limits.New(loadCtx, app.db, time.Now, limOpts...)
	if err != nil {
		return fmt.Errorf("limits: %v", err)
	}
	cfg.Proxy.Limits = lim
	priceTable, err := svc.PriceTable(loadCtx)
	if err != nil {
		return fmt.Errorf("prices: %v", err)
	}
	cfg.Proxy.Prices = priceTable
	// GET /v1/models without a provider named: every provider's list,
	// fetched in the background with each provider's key, never through a
	// redirect (a key goes only to its provider's base URL).
	catalog := models.New(models.SourceOf(svc.ProvidersWithKeys, cfg.Proxy.DefaultProvider), &http.Client{
		Transport:     proxy.NewTransport(cfg.Proxy),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, log)
	defer catalog.Close()
	cfg.Proxy.Models = catalog
	cfg.Proxy.KeyStates = svc
	// An alias equal to the admin token would shadow the admin routes.
	svc.ReservedSegment = func(seg string) bool { return token != "" && strings.EqualFold(seg, token) }
	px := proxy.New(svc, rec, reqLog, cfg.Proxy)
	var metricsHandler http.Handler
	if m != nil {
		metricsHandler = m.Handler()
	}
	handler := server.New(svc, px, log, server.Config{AccessToken: token, CORSOrigins: cfg.CORSOrigins, Metrics: metricsHandler})

	// Requests run under base; cancelling it after the grace period ends
	// the streams that are still open, and with them their upstreams.
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		rec.Close(context.Background())
		return fmt.Errorf("serve: %v", err)
	case <-ctx.Done():
	}
	grace := cfg.ShutdownGrace
	log.Info("shutting down", "grace", grace.String())
	drain, cancelDrain := context.WithTimeout(context.Background(), grace)
	err = srv.Shutdown(drain)
	cancelDrain()
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("grace period over: ending open requests")
		cancelBase()
		hard, cancelHard := context.WithTimeout(context.Background(), 3*time.Second)
		if err := srv.Shutdown(hard); err != nil {
			srv.Close()
		}
		cancelHard()
	}
	px.CloseIdle()
	flush, cancelFlush := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelFlush()
	if err := rec.Close(flush); err != nil {
		log.Error("usage records not flushed", "err", err)
	}
	out.Flush() // the last requests' lines before the last line
	log.Info("stopped", "usage_written", rec.Written(), "usage_dropped", rec.Dropped())
	return nil
}

func checkToken(token string) error {
	if token == "" {
		return nil
	}
	if strings.ContainsAny(token, "/?#% \t\r\n") {
		return aiproxy.Errorf(aiproxy.EINVALID, "access token must not contain / ? # %% or spaces")
	}
	if aiproxy.Reserved(strings.ToLower(token)) {
		return aiproxy.Errorf(aiproxy.EINVALID, "access token collides with the route /%s: choose another", token)
	}
	if strings.ContainsAny(token, ".:") {
		return aiproxy.Errorf(aiproxy.EINVALID, "access token must not contain . or : (it could be taken for a provider host)")
	}
	return nil
}

// envFallback serves api.openai.com with OPENAI_API_KEY (or the seed's
// OPENAPI_API_KEY) when no key for it is stored. AIPROXY_OPENAI_BASE
// overrides its base URL, for tests against a local upstream.
func (a *appContext) envFallback() map[string]aiproxy.Provider {
	key, ok := a.getenv("OPENAI_API_KEY")
	if !ok {
		key, _ = a.getenv("OPENAPI_API_KEY")
	}
	if key == "" {
		return nil
	}
	base := "https://api.openai.com"
	if b, ok := a.getenv("AIPROXY_OPENAI_BASE"); ok {
		if nb, err := aiproxy.NormalizeBaseURL(b); err == nil {
			base = nb
		}
	}
	return map[string]aiproxy.Provider{"api.openai.com": {
		Host: "api.openai.com", BaseURL: base, InjectUsage: true, Keys: []string{key}, KeyCount: 1,
	}}
}

// newLogger returns a logger writing to w; dest is the stream w ends in,
// which decides the default format.
func newLogger(w, dest io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "" {
		format = "json"
		if isTerminal(dest) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// parseRetention reads --usage-retention: a duration with a unit (400d, 8w,
// 36h), at least one day; empty is the default. source names the flag, or where its value came
// from, for the error.
func parseRetention(v, source string) (time.Duration, error) {
	if v == "" {
		return store.DefaultRetention, nil
	}
	digits := strings.TrimRight(v, "smhdw")
	if len(v) < 2 || len(digits) != len(v)-1 || strings.Trim(digits, "0123456789") != "" {
		return 0, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %q: want a duration such as 400d, 8w or 36h", source, v)
	}
	now := time.Now()
	t, err := aiproxy.ParseSince(v, now)
	if err != nil {
		return 0, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %q: want a duration such as 400d, 8w or 36h", source, v)
	}
	keep := now.Sub(t)
	if err := store.CheckRetention(keep); err != nil {
		return 0, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s %q: keep usage at least 1 day (1d)", source, v)
	}
	return keep, nil
}
