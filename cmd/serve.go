package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/logbuf"
	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
	"github.com/aiproxy/aiproxy/pkg/usage"
)

func newServeCmd(app *appContext) *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runServe(c.Context(), app, c.ErrOrStderr())
		},
	}
	f := c.Flags()
	f.String("listen", "127.0.0.1:8787", "address to listen on")
	f.String("access-token", "", "admin token; empty turns the HTTP admin routes off (env AIPROXY_ACCESS_TOKEN or ACCESS_TOKEN)")
	f.String("default-provider", "api.openai.com", "provider for requests without X-Host-Final")
	f.StringSlice("cors-origins", nil, "origins allowed to call the proxy from a browser (default any)")
	f.Int64("max-body", 32<<20, "largest request body in bytes")
	f.Duration("upstream-header-timeout", 10*time.Minute, "longest wait for an upstream's response headers")
	f.Duration("upstream-dial-timeout", 10*time.Second, "longest wait to connect to an upstream")
	f.Duration("stream-idle-timeout", 5*time.Minute, "abort a response whose upstream sends nothing for this long")
	f.Duration("shutdown-grace", 25*time.Second, "how long in-flight requests may finish after SIGTERM")
	f.Bool("deny-private-upstreams", false, "refuse upstreams whose address is loopback, private or link-local (checked at dial time)")
	f.String("log-level", "info", "debug, info, warn or error")
	f.String("log-format", "", "text or json (default text on a terminal, json otherwise)")
	return c
}

// reservedTokens are first path segments that routing claims before the
// admin token: a token equal to one would never be reached.
var reservedTokens = []string{"openai", "admin", "me", "healthz"}

func runServe(ctx context.Context, app *appContext, stderr io.Writer) error {
	v := app.v
	// The proxy's line per request is batched (a copy instead of a write
	// system call on the request path, ~9 % of its CPU); every other line
	// is written at once, in order with them.
	out := logbuf.New(stderr, 100*time.Millisecond)
	defer out.Close()
	log, err := newLogger(out.Immediate(), stderr, v.GetString("log-level"), v.GetString("log-format"))
	if err != nil {
		return err
	}
	reqLog, _ := newLogger(out, stderr, v.GetString("log-level"), v.GetString("log-format"))
	token := v.GetString("access-token")
	if err := checkToken(token); err != nil {
		return err
	}
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	release, err := app.db.ClaimServer()
	if err != nil {
		return err
	}
	defer release()

	ln, err := net.Listen("tcp", v.GetString("listen"))
	if err != nil {
		return fmt.Errorf("listen: %v", err)
	}
	log.Info("aiproxy serving", "db", app.dbPath(), "listen", ln.Addr().String(), "admin", token != "")
	if token != "" && len(token) < 16 {
		log.Warn("the access token is shorter than 16 characters: use a long random one")
	}

	cfg := proxy.Config{
		DefaultProvider: v.GetString("default-provider"),
		Fallback:        envFallback(),
		MaxBody:         v.GetInt64("max-body"),
		DialTimeout:     v.GetDuration("upstream-dial-timeout"),
		HeaderTimeout:   v.GetDuration("upstream-header-timeout"),
		IdleTimeout:     v.GetDuration("stream-idle-timeout"),
		DenyPrivate:     v.GetBool("deny-private-upstreams"),
	}
	rec := usage.New(svc.RecordUsage, log, 10000)
	px := proxy.New(svc, rec, reqLog, cfg)
	handler := server.New(svc, px, log, server.Config{AccessToken: token, CORSOrigins: v.GetStringSlice("cors-origins")})

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
	grace := v.GetDuration("shutdown-grace")
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
	seg := strings.ToLower(token)
	for _, r := range reservedTokens {
		if seg == r {
			return aiproxy.Errorf(aiproxy.EINVALID, "access token %q collides with the route /%s: choose another", token, r)
		}
	}
	if len(seg) > 1 && seg[0] == 'v' && strings.Trim(seg[1:], "0123456789") == "" {
		return aiproxy.Errorf(aiproxy.EINVALID, "access token collides with the proxy route /%s: choose another", token)
	}
	if strings.ContainsAny(token, ".:") {
		return aiproxy.Errorf(aiproxy.EINVALID, "access token must not contain . or : (it could be taken for a provider host)")
	}
	return nil
}

// envFallback serves api.openai.com with OPENAI_API_KEY (or the seed's
// OPENAPI_API_KEY) when no key for it is stored. AIPROXY_OPENAI_BASE
// overrides its base URL, for tests against a local upstream.
func envFallback() map[string]aiproxy.Provider {
	key := os.Getenv("OPENAI_API_KEY")
	if key == "" {
		key = os.Getenv("OPENAPI_API_KEY")
	}
	if key == "" {
		return nil
	}
	base := "https://api.openai.com"
	if b := os.Getenv("AIPROXY_OPENAI_BASE"); b != "" {
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
func newLogger(w, dest io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "invalid --log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "" {
		format = "json"
		if isTerminal(dest) {
			format = "text"
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, aiproxy.Errorf(aiproxy.EINVALID, "invalid --log-format %q: want text or json", format)
}
