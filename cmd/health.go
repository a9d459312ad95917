package cmd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

type healthOptions struct {
	URL, Listen string
	Timeout     time.Duration
}

// newHealthCmd is `aiproxy health`: a container HEALTHCHECK for images
// without curl. It takes --listen like serve (so AIPROXY_LISTEN and a
// config file's listen: reach both) and asks that address's /healthz.
func newHealthCmd(_ *appContext) *cobra.Command {
	var opts healthOptions
	c := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when a running serve's /healthz answers 200",
		Long: "Ask a running aiproxy serve whether it is healthy (its database answers): exit 0\n" +
			"when GET /healthz answers 200, else print why and exit 1. The URL defaults to\n" +
			"http://LISTEN/healthz, LISTEN being serve's --listen (AIPROXY_LISTEN, listen: in a\n" +
			"--config file); an unspecified address such as 0.0.0.0 is asked on loopback.",
		Args: argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			return runHealth(c.Context(), c.OutOrStdout(), opts)
		},
	}
	c.Flags().StringVar(&opts.URL, "url", "", "URL to ask (default http://LISTEN/healthz)")
	c.Flags().StringVar(&opts.Listen, "listen", "127.0.0.1:8787", "serve's listen address, when --url is not given")
	c.Flags().DurationVar(&opts.Timeout, "timeout", 5*time.Second, "longest wait for the answer")
	return c
}

func runHealth(ctx context.Context, out io.Writer, opts healthOptions) error {
	u := opts.URL
	if u == "" {
		u = healthURL(opts.Listen)
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return aiproxy.Errorf(aiproxy.EINVALID, "invalid --url %q: want http://HOST:PORT/healthz", u)
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return aiproxy.Errorf(aiproxy.EINVALID, "invalid --url %q: %v", u, err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "%s: unreachable: %v", u, unwrapURLError(err))
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "%s: unhealthy: %s", u, res.Status)
	}
	_, err = fmt.Fprintln(out, "ok")
	return err
}

// healthURL is the /healthz URL of a serve listening on listen: an
// unspecified or empty host (0.0.0.0, [::], :8787) is asked on loopback.
func healthURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen + "/healthz"
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

// unwrapURLError drops the "Get URL:" prefix that *url.Error adds, since
// the message already names the URL.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// initCompletion adds cobra's own `completion bash|zsh|fish|powershell`
// now rather than at Execute, so that an unknown shell is an error (as an
// unknown subcommand is everywhere else) instead of the help and exit 0.
func initCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		c.Args = cobra.ArbitraryArgs
		c.RunE = groupRunE
	}
}
