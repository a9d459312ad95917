package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/scrub"
)

type providerTestOptions struct {
	Host    string
	JSON    bool
	Timeout time.Duration
}

// Results of one key's check.
const (
	keyOK          = "ok"
	keyRejected    = "rejected"
	keyUnreachable = "unreachable"
)

// keyCheck is one key's answer to `provider test`. It never holds the key:
// only its hint, and the provider's message with the key masked.
type keyCheck struct {
	Host    string `json:"host"`
	KeyHint string `json:"key_hint"`
	Result  string `json:"result"` // ok, rejected or unreachable
	Status  *int   `json:"status"` // the provider's HTTP status; null when unreachable
	Message string `json:"message"`
}

func newProviderTestCmd(app *appContext) *cobra.Command {
	var opts providerTestOptions
	c := &cobra.Command{
		Use:   "test [HOST]",
		Short: "Check each stored key against its provider's model list",
		Long: "Ask each provider, once per stored key, for its model list (GET base URL + API root +\n" +
			"/models, with the key in the provider's auth scheme) and print, per key hint, ok,\n" +
			"rejected (the provider's status and message) or unreachable (why). Exits 1 when any\n" +
			"key fails. Redirects are not followed: a key goes only to its provider's base URL.",
		Example: "  aiproxy provider test\n" +
			"  aiproxy provider test api.openai.com --json",
		Args: argsRange(0, "HOST"),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				opts.Host = args[0]
			}
			return runProviderTest(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	addJSONFlag(c, &opts.JSON)
	c.Flags().DurationVar(&opts.Timeout, "timeout", 15*time.Second, "longest wait for each provider's answer")
	return c
}

func runProviderTest(ctx context.Context, app *appContext, out io.Writer, opts providerTestOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	var hosts []string
	if opts.Host != "" {
		hosts = []string{opts.Host}
	} else {
		ps, err := svc.ListProviders(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			hosts = append(hosts, p.Host)
		}
	}
	client := &http.Client{
		Timeout:       opts.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	checks := []keyCheck{}
	failed := 0
	for _, h := range hosts {
		p, err := svc.Provider(ctx, h)
		if err != nil {
			return err
		}
		for _, k := range p.Keys {
			kc := checkKey(ctx, client, p, k)
			if kc.Result != keyOK {
				failed++
			}
			checks = append(checks, kc)
		}
	}
	if opts.JSON {
		err = writeJSON(out, checks)
	} else {
		err = providerTestListing(checks).write(out)
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d provider keys failed the test", failed, len(checks))
	}
	return nil
}

// checkKey asks p for its model list with key.
func checkKey(ctx context.Context, client *http.Client, p aiproxy.Provider, key string) keyCheck {
	kc := keyCheck{Host: p.Host, KeyHint: keys.Hint(key)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.APIURL("/models"), nil)
	if err != nil {
		kc.Result, kc.Message = keyUnreachable, "invalid base URL"
		return kc
	}
	p.PinHeaders(req.Header)
	p.SetAuth(req.Header, key)
	req.Header.Set("Accept", "application/json")
	res, err := client.Do(req)
	if err != nil {
		kc.Result, kc.Message = keyUnreachable, scrub.String(reason(err), key)
		return kc
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	status := res.StatusCode
	kc.Status = &status
	if status >= 200 && status < 300 {
		kc.Result = keyOK
		return kc
	}
	kc.Result = keyRejected
	kc.Message = scrub.String(providerMessage(res.Status, body), key)
	return kc
}

// reason is why a request got no answer, without Go's "Get URL:" prefix.
func reason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout") {
		return "no answer in time"
	}
	return err.Error()
}

// providerMessage is the message in an error body: OpenAI's
// {"error":{"message"}}, {"error":"…"} or {"message"}, else the start of the
// text, else the status line.
func providerMessage(status string, body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &v) == nil {
		var e struct {
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(v.Error, &e) == nil && e.Message != "":
			return oneLine(aiproxy.Clip(e.Message, 300))
		case json.Unmarshal(v.Error, &s) == nil && s != "":
			return oneLine(aiproxy.Clip(s, 300))
		case v.Message != "":
			return oneLine(aiproxy.Clip(v.Message, 300))
		}
	}
	if t := oneLine(string(body)); t != "" && !strings.HasPrefix(t, "<") {
		return aiproxy.Clip(t, 300)
	}
	return status
}

func providerTestListing(checks []keyCheck) listing {
	l := listing{Header: []string{"HOST", "KEY", "RESULT", "STATUS", "MESSAGE"}}
	for _, c := range checks {
		result := cell{Text: c.Result}
		if c.Result != keyOK {
			result.Tone = toneWarn
		}
		status := cell{Text: "-", Tone: toneMuted}
		if c.Status != nil {
			status = cell{Text: strconv.Itoa(*c.Status)}
		}
		msg := cell{Text: c.Message}
		if c.Message == "" {
			msg = cell{Text: "-", Tone: toneMuted}
		}
		l.Rows = append(l.Rows, []cell{{Text: c.Host}, {Text: c.KeyHint}, result, status, msg})
	}
	return l
}
