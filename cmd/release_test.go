package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// No container engine or systemd runs here, so these tests read the
// Dockerfile, the systemd unit and .goreleaser.yaml, and run the aiproxy
// command lines they hold through the real command tree: a misspelt or
// removed flag, a bad value or a variable that names no flag fails here,
// not in a user's container.

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined, comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur += s + " "
			continue
		}
		if cur += line; strings.TrimSpace(cur) != "" {
			out = append(out, strings.TrimSpace(cur))
		}
		cur = ""
	}
	return out
}

// jsonArgs parses the exec form of a Dockerfile instruction: ["a", "b"].
func jsonArgs(t *testing.T, s string) []string {
	t.Helper()
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		t.Fatalf("Dockerfile: %q is not the exec form [\"…\"]: %v", s, err)
	}
	return a
}

// aiproxyArgs checks that argv runs the aiproxy binary and returns its
// arguments.
func aiproxyArgs(t *testing.T, where string, argv []string) []string {
	t.Helper()
	if len(argv) == 0 || filepath.Base(argv[0]) != "aiproxy" {
		t.Fatalf("%s: %q does not run aiproxy", where, argv)
	}
	return argv[1:]
}

// envFlag checks that an AIPROXY_ variable sets a flag of cmdPath.
func envFlag(t *testing.T, where, name, cmdPath string) {
	t.Helper()
	root := newRoot(&appContext{v: viper.New(), streams: Streams{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}}})
	c, _, err := root.Find(strings.Fields(cmdPath))
	if err != nil {
		t.Fatal(err)
	}
	flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "AIPROXY_"), "_", "-"))
	if c.Flags().Lookup(flag) == nil && c.InheritedFlags().Lookup(flag) == nil {
		t.Errorf("%s: %s sets no flag of aiproxy %s (no --%s)", where, name, cmdPath, flag)
	}
}

// runServeOnce runs `aiproxy ARGS` (a serve command line) with env until it
// has started, then stops it as SIGTERM would: every flag and value must be
// accepted. The listen address becomes a free loopback port and the
// database a temporary file.
func runServeOnce(t *testing.T, where string, args []string, env map[string]string) {
	t.Helper()
	args = append([]string(nil), args...)
	for i := range args {
		if i > 0 && args[i-1] == "--listen" {
			args[i] = "127.0.0.1:0"
		}
	}
	env["AIPROXY_DB"] = filepath.Join(t.TempDir(), "aiproxy.db")
	if _, ok := env["AIPROXY_LISTEN"]; ok {
		env["AIPROXY_LISTEN"] = "127.0.0.1:0"
	}
	// Once serve's first line is out, stop it as SIGTERM does: it drains
	// and exits 0.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errb := &stopOnLine{line: "aiproxy serving", stop: cancel}
	var out bytes.Buffer
	code := execute(ctx, args, Streams{In: strings.NewReader(""), Out: &out, Err: errb},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if code != 0 {
		t.Errorf("%s: aiproxy %s: exit %d, stderr %s", where, strings.Join(args, " "), code, errb.String())
	}
	if !strings.Contains(errb.String(), "aiproxy serving") {
		t.Errorf("%s: aiproxy %s did not start serving: %s", where, strings.Join(args, " "), errb.String())
	}
}

// stopOnLine is a log sink that calls stop once line has been written.
type stopOnLine struct {
	mu   sync.Mutex
	b    bytes.Buffer
	line string
	stop func()
}

func (w *stopOnLine) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if strings.Contains(w.b.String(), w.line) {
		w.stop()
	}
	return n, err
}

func (w *stopOnLine) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestRelease_DockerfileCommands: the image's entry point runs serve with
// flags and variables serve has, and its HEALTHCHECK runs `aiproxy
// health`, which finds serve through the same AIPROXY_LISTEN.
func TestRelease_DockerfileCommands(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	var entry, cmdArgs, health []string
	final := false
	for _, ins := range dockerfile(t) {
		word, rest, _ := strings.Cut(ins, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(word) {
		case "FROM":
			final = !strings.Contains(rest, " AS ")
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile: ENV %q: want NAME=VALUE", kv)
				}
				env[k] = v
			}
		case "ENTRYPOINT":
			entry = jsonArgs(t, rest)
		case "CMD":
			if final {
				cmdArgs = jsonArgs(t, rest)
			}
		case "HEALTHCHECK":
			_, hc, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("Dockerfile: HEALTHCHECK %q has no CMD", rest)
			}
			health = jsonArgs(t, strings.TrimSpace(hc))
		case "USER":
			if strings.HasPrefix(rest, "0") || strings.HasPrefix(rest, "root") {
				t.Errorf("Dockerfile: USER %s: the image must run as a non-root user", rest)
			}
		case "VOLUME":
			if !strings.Contains(rest, "/data") {
				t.Errorf("Dockerfile: VOLUME %s, want /data", rest)
			}
		}
	}
	if !strings.HasPrefix(env["AIPROXY_DB"], "/data/") {
		t.Errorf("Dockerfile: AIPROXY_DB=%q, want the database on the /data volume", env["AIPROXY_DB"])
	}
	for k := range env {
		if strings.HasPrefix(k, "AIPROXY_") {
			envFlag(t, "Dockerfile ENV", k, "serve")
		}
	}
	serve := aiproxyArgs(t, "Dockerfile ENTRYPOINT+CMD", append(entry, cmdArgs...))
	if len(serve) == 0 || serve[0] != "serve" {
		t.Fatalf("Dockerfile: ENTRYPOINT+CMD run aiproxy %q, want serve", serve)
	}
	runServeOnce(t, "Dockerfile ENTRYPOINT+CMD", serve, maps.Clone(env))

	// The health check, with the image's environment, against a serve.
	hc := aiproxyArgs(t, "Dockerfile HEALTHCHECK", health)
	if len(hc) == 0 || hc[0] != "health" {
		t.Fatalf("Dockerfile: HEALTHCHECK runs aiproxy %q, want health", hc)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	henv := maps.Clone(env)
	henv["AIPROXY_LISTEN"] = strings.Replace(srv.Listener.Addr().String(), "127.0.0.1", "0.0.0.0", 1) // as in the image
	var out, errb bytes.Buffer
	if code := execute(t.Context(), hc, Streams{In: strings.NewReader(""), Out: &out, Err: &errb},
		func(k string) (string, bool) { v, ok := henv[k]; return v, ok }); code != 0 {
		t.Errorf("Dockerfile HEALTHCHECK: aiproxy %s: exit %d, stderr %s", strings.Join(hc, " "), code, errb.String())
	}
}

// TestRelease_SystemdUnit: the unit's ExecStart runs serve with real flags
// and values, its Environment names real flags, and it has the hardening
// the contract promises.
func TestRelease_SystemdUnit(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "aiproxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("aiproxy.service: %q is not KEY=VALUE", line)
		}
		settings[k] = append(settings[k], v)
	}
	for k, want := range map[string]string{"DynamicUser": "yes", "StateDirectory": "aiproxy", "NoNewPrivileges": "yes", "ProtectSystem": "strict"} {
		if got := settings[k]; len(got) != 1 || got[0] != want {
			t.Errorf("aiproxy.service: %s=%v, want %s", k, got, want)
		}
	}
	env := map[string]string{}
	for _, e := range settings["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
		if strings.HasPrefix(k, "AIPROXY_") {
			envFlag(t, "aiproxy.service Environment", k, "serve")
		}
	}
	if !strings.HasPrefix(env["AIPROXY_DB"], "/var/lib/aiproxy/") {
		t.Errorf("aiproxy.service: AIPROXY_DB=%q, want it in the StateDirectory /var/lib/aiproxy", env["AIPROXY_DB"])
	}
	if len(settings["ExecStart"]) != 1 {
		t.Fatalf("aiproxy.service: ExecStart %q, want one", settings["ExecStart"])
	}
	args := aiproxyArgs(t, "aiproxy.service ExecStart", strings.Fields(settings["ExecStart"][0]))
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("aiproxy.service: ExecStart runs aiproxy %q, want serve", args)
	}
	runServeOnce(t, "aiproxy.service ExecStart", args, env)
}

// TestRelease_Goreleaser: releases for linux, darwin and windows on amd64
// and arm64, static, with checksums, and a version that reaches `aiproxy
// version` (the -X targets are this package's variables).
func TestRelease_Goreleaser(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Before struct{ Hooks []string }
		Builds []struct {
			Env     []string
			Goos    []string
			Goarch  []string
			Ldflags []string
		}
		Checksum struct {
			NameTemplate string `yaml:"name_template"`
		}
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf(".goreleaser.yaml: %v", err)
	}
	if len(cfg.Builds) != 1 {
		t.Fatalf(".goreleaser.yaml: %d builds, want 1", len(cfg.Builds))
	}
	bd := cfg.Builds[0]
	if strings.Join(bd.Goos, ",") != "linux,darwin,windows" || strings.Join(bd.Goarch, ",") != "amd64,arm64" {
		t.Errorf(".goreleaser.yaml: goos %v goarch %v", bd.Goos, bd.Goarch)
	}
	if !strings.Contains(strings.Join(bd.Env, " "), "CGO_ENABLED=0") {
		t.Errorf(".goreleaser.yaml: env %v, want CGO_ENABLED=0", bd.Env)
	}
	if cfg.Checksum.NameTemplate == "" {
		t.Errorf(".goreleaser.yaml: no checksum file")
	}
	x := regexp.MustCompile(`-X github\.com/aiproxy/aiproxy/cmd\.(\w+)=\{\{\s*\.(\w+)\s*\}\}`)
	got := map[string]string{}
	for _, f := range bd.Ldflags {
		for _, m := range x.FindAllStringSubmatch(f, -1) {
			got[m[1]] = m[2]
		}
	}
	if got["version"] != "Version" || got["commit"] != "Commit" || got["date"] != "Date" {
		t.Errorf(".goreleaser.yaml: -X flags set %v, want cmd.version={{.Version}}, cmd.commit, cmd.date", got)
	}
	// The hooks that make the archives' docs run here too.
	hooks := strings.Join(cfg.Before.Hooks, "\n")
	if !strings.Contains(hooks, "go run ./cmd/gendocs") || !strings.Contains(hooks, "completion") {
		t.Errorf(".goreleaser.yaml: before hooks %q, want gendocs and completions", hooks)
	}
}
