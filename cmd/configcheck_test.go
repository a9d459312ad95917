package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// runEnv runs aiproxy in-process with env as its whole environment.
func runEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := execute(t.Context(), args, Streams{In: strings.NewReader(""), Out: &out, Err: &errOut}, lookup)
	return result{Out: out.String(), Err: errOut.String(), Code: code}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "aiproxy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfig_unknownKeysAndBadValues: a config key that no command knows,
// or an AIPROXY_* or config value that does not parse for the flag, stops
// serve and every other command with one line naming the key and the file
// or the variable.
func TestConfig_unknownKeysAndBadValues(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	typo := writeConfig(t, "db: "+db+"\nacess-token: use-a-long-random-string-here\n")
	nested := writeConfig(t, "serve:\n  listen: 127.0.0.1:0\n")
	badMaxBody := writeConfig(t, "max-body: lots\n")
	badList := writeConfig(t, "cors-origins: {a: b}\n")
	listForScalar := writeConfig(t, "listen: [a, b]\n")
	badLevel := writeConfig(t, "log-level: loud\n")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"misspelt access-token, serve", nil, []string{"--config", typo, "serve"},
			`config file ` + typo + `: unknown key "acess-token" (did you mean "access-token"?)`},
		{"misspelt access-token, user list", nil, []string{"--config", typo, "user", "list"},
			`config file ` + typo + `: unknown key "acess-token"`},
		{"nested key", nil, []string{"--db", db, "--config", nested, "user", "list"}, `unknown key "serve"`},
		{"AIPROXY_CONFIG names the file", map[string]string{"AIPROXY_CONFIG": typo}, []string{"user", "list"}, `unknown key "acess-token"`},
		{"AIPROXY_MAX_BODY=abc", map[string]string{"AIPROXY_MAX_BODY": "abc"}, []string{"--db", db, "serve"},
			`environment variable AIPROXY_MAX_BODY: invalid value "abc" for --max-body: want a whole number`},
		{"AIPROXY_SHUTDOWN_GRACE=soon", map[string]string{"AIPROXY_SHUTDOWN_GRACE": "soon"}, []string{"--db", db, "serve"},
			`environment variable AIPROXY_SHUTDOWN_GRACE: invalid value "soon" for --shutdown-grace: want a duration`},
		{"AIPROXY_DENY_PRIVATE_UPSTREAMS=maybe", map[string]string{"AIPROXY_DENY_PRIVATE_UPSTREAMS": "maybe"}, []string{"--db", db, "serve"},
			`environment variable AIPROXY_DENY_PRIVATE_UPSTREAMS: invalid value "maybe" for --deny-private-upstreams: want true or false`},
		{"AIPROXY_JSON for a listing", map[string]string{"AIPROXY_JSON": "yes please"}, []string{"--db", db, "user", "list"},
			`environment variable AIPROXY_JSON: invalid value "yes please" for --json`},
		{"AIPROXY_LOG_LEVEL=loud", map[string]string{"AIPROXY_LOG_LEVEL": "loud"}, []string{"--db", db, "serve"},
			`invalid --log-level (from environment variable AIPROXY_LOG_LEVEL) "loud"`},
		{"max-body in the file", nil, []string{"--db", db, "--config", badMaxBody, "serve"},
			`config file ` + badMaxBody + `: invalid value "lots" for --max-body: want a whole number`},
		{"a mapping for a list", nil, []string{"--db", db, "--config", badList, "serve"},
			`config file ` + badList + `: cors-origins: want a value, not a mapping`},
		{"a list for one value", nil, []string{"--db", db, "--config", listForScalar, "serve"},
			`config file ` + listForScalar + `: listen: want one value, not a list`},
		{"log-level in the file", nil, []string{"--db", db, "--config", badLevel, "serve"},
			`invalid --log-level (from config file ` + badLevel + `) "loud"`},
		{"--max-body abc, for comparison", nil, []string{"--db", db, "serve", "--max-body", "abc"},
			`invalid argument "abc" for "--max-body" flag`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkFailed(t, runEnv(t, tc.env, tc.args...), tc.want)
		})
	}
}

// TestConfig_oneFileForAllCommands: keys of other commands' flags are
// accepted (listen: for serve in a file that user list reads too), and
// environment values that parse are used.
func TestConfig_oneFileForAllCommands(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	cfg := writeConfig(t, "db: "+db+"\nlisten: 127.0.0.1:0\naccess-token: a-long-random-admin-token\ncors-origins: [https://app.example]\nmax-body: 1024\n")
	if r := runEnv(t, nil, "--config", cfg, "user", "create", "alice"); r.Code != 0 {
		t.Fatalf("user create with a serve config: exit %d, %q", r.Code, r.Err)
	}
	if r := runEnv(t, map[string]string{"AIPROXY_CONFIG": cfg, "AIPROXY_JSON": "true"}, "user", "list"); r.Code != 0 || !strings.HasPrefix(r.Out, "[") {
		t.Errorf("user list with AIPROXY_JSON=true: exit %d, stdout %q, stderr %q; want JSON", r.Code, r.Out, r.Err)
	}
}

// TestServe_resolvedConfig checks that serve's settings come from flags,
// then the environment, then the file, into the one serveConfig.
func TestServe_resolvedConfig(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "listen: 127.0.0.1:1\nmax-body: 1024\ncors-origins: [https://a.example, https://b.example]\nshutdown-grace: 3s\n")
	env := map[string]string{"AIPROXY_LISTEN": "127.0.0.1:2", "AIPROXY_ACCESS_TOKEN": "from-the-environment-token", "OPENAI_API_KEY": "sk-env"}
	var got serveConfig
	app := &appContext{streams: Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard},
		lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	app.v = viper.New()
	root := newRoot(app)
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	serve.RunE = func(c *cobra.Command, _ []string) error {
		var opts serveOptions
		opts.Listen, _ = c.Flags().GetString("listen")
		opts.AccessToken, _ = c.Flags().GetString("access-token")
		opts.CORSOrigins, _ = c.Flags().GetStringSlice("cors-origins")
		opts.MaxBody, _ = c.Flags().GetInt64("max-body")
		opts.ShutdownGrace, _ = c.Flags().GetDuration("shutdown-grace")
		opts.LogLevel, _ = c.Flags().GetString("log-level")
		opts.DefaultReserve, _ = c.Flags().GetInt64("default-reserve")
		var err error
		got, err = app.resolveServe(opts, c.Flags().Changed("access-token"))
		return err
	}
	root.SetArgs([]string{"--config", cfg, "serve", "--shutdown-grace", "7s"})
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got.Listen != "127.0.0.1:2" {
		t.Errorf("Listen = %q, want the environment's 127.0.0.1:2 over the file's", got.Listen)
	}
	if got.AccessToken != "from-the-environment-token" || got.TokenOnArgv {
		t.Errorf("AccessToken = %q, TokenOnArgv = %v; want the environment's, not on argv", got.AccessToken, got.TokenOnArgv)
	}
	if got.Proxy.MaxBody != 1024 || strings.Join(got.CORSOrigins, " ") != "https://a.example https://b.example" {
		t.Errorf("MaxBody = %d, CORSOrigins = %q; want the file's", got.Proxy.MaxBody, got.CORSOrigins)
	}
	if got.ShutdownGrace != 7*time.Second {
		t.Errorf("ShutdownGrace = %v, want the flag's 7s", got.ShutdownGrace)
	}
	if fb := got.Proxy.Fallback["api.openai.com"]; len(fb.Keys) != 1 || fb.Keys[0] != "sk-env" {
		t.Errorf("Fallback = %+v, want OPENAI_API_KEY's key", got.Proxy.Fallback)
	}
}

// TestServe_accessTokenOnCommandLineWarns: --access-token on the command
// line is visible in the process list, so serve warns once; the
// environment variable does not.
func TestServe_accessTokenOnCommandLineWarns(t *testing.T) {
	t.Parallel()
	const token = "a-long-random-admin-token-0123"
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		warnings int
	}{
		{"flag", nil, []string{"--access-token", token}, 1},
		{"environment", map[string]string{"AIPROXY_ACCESS_TOKEN": token}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := serveOnce(t, tc.env, tc.args...)
			if n := strings.Count(logs, "process list"); n != tc.warnings {
				t.Errorf("serve log has %d process-list warnings, want %d:\n%s", n, tc.warnings, logs)
			}
			if strings.Contains(logs, token) {
				t.Errorf("the token reached the log:\n%s", logs)
			}
		})
	}
}

// serveOnce starts serve on a fresh database with env as its environment,
// stops it once it has logged its first line, and returns its log.
func serveOnce(t *testing.T, env map[string]string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &syncBuffer{}
	exit := make(chan int, 1)
	args := append([]string{"--db", newDBPath(t), "serve", "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	go func() {
		exit <- execute(ctx, args, Streams{In: strings.NewReader(""), Out: io.Discard, Err: logs}, lookup)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "aiproxy serving") {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", logs.String())
		}
		select {
		case code := <-exit:
			t.Fatalf("serve exited with %d: %s", code, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("serve exit code %d, want 0", code)
	}
	first, _, _ := strings.Cut(logs.String(), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(first), &m); err != nil || m["db"] == nil || m["listen"] == nil {
		t.Errorf("first log line %q does not name the database and the address", first)
	}
	return logs.String()
}

// TestVersionFlag: aiproxy --version prints what aiproxy version prints.
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	flag := runOK(t, "--version")
	cmd := runOK(t, "version")
	if flag != cmd || !strings.HasPrefix(flag, "aiproxy ") {
		t.Errorf("aiproxy --version = %q, aiproxy version = %q; want the same line", flag, cmd)
	}
}
