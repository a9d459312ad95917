package cmd

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealth_ExitCodes: health exits 0 on a 200 from /healthz and 1, with
// one line, on any other status or no answer.
func TestHealth_ExitCodes(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if r := run(t, "", "health", "--url", srv.URL+"/healthz"); r.Code != 0 || r.Out != "ok\n" {
		t.Errorf("health on a 200: %+v, want exit 0 and ok", r)
	}
	// --listen, as serve takes it, names the address to ask.
	if r := run(t, "", "health", "--listen", strings.TrimPrefix(srv.URL, "http://")); r.Code != 0 {
		t.Errorf("health --listen: %+v, want exit 0", r)
	}
	status = http.StatusServiceUnavailable
	checkFailed(t, run(t, "", "health", "--url", srv.URL+"/healthz"), "503")

	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	checkFailed(t, run(t, "", "health", "--url", url+"/healthz"), "unreachable")
	checkFailed(t, run(t, "", "health", "--url", "ftp://x/healthz"), "invalid --url")
}

// TestHealth_ListenFromEnvironment: AIPROXY_LISTEN reaches health as it
// reaches serve, so a container's one variable serves both.
func TestHealth_ListenFromEnvironment(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	env := map[string]string{"AIPROXY_LISTEN": strings.TrimPrefix(srv.URL, "http://")}
	var out, errb bytes.Buffer
	code := execute(t.Context(), []string{"health"}, Streams{In: strings.NewReader(""), Out: &out, Err: &errb},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if code != 0 {
		t.Errorf("health with AIPROXY_LISTEN=%s: exit %d, stderr %q", env["AIPROXY_LISTEN"], code, errb.String())
	}
}

func TestHealthURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.0.0.1:8787": "http://127.0.0.1:8787/healthz",
		"0.0.0.0:8787":   "http://127.0.0.1:8787/healthz",
		":9000":          "http://127.0.0.1:9000/healthz",
		"[::]:8787":      "http://[::1]:8787/healthz",
		"host.lan:80":    "http://host.lan:80/healthz",
	} {
		if got := healthURL(in); got != want {
			t.Errorf("healthURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCompletion_EveryShell: cobra's completion command writes a script
// for each shell the contract names, and refuses another.
func TestCompletion_EveryShell(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{
		"bash":       "__start_aiproxy",
		"zsh":        "#compdef aiproxy",
		"fish":       "complete -c aiproxy",
		"powershell": "Register-ArgumentCompleter",
	} {
		r := run(t, "", "completion", shell)
		if r.Code != 0 || !strings.Contains(r.Out, want) {
			t.Errorf("completion %s: exit %d, stderr %q, stdout without %q", shell, r.Code, r.Err, want)
		}
	}
	if r := run(t, "", "completion", "tcsh"); r.Code == 0 {
		t.Errorf("completion tcsh: exit 0, want an error")
	}
	// The scripts complete subcommands through the hidden __complete.
	r := run(t, "", "__complete", "us")
	if r.Code != 0 || !strings.Contains(r.Out, "user") {
		t.Errorf("__complete us: exit %d, stdout %q, want user", r.Code, r.Out)
	}
}

// TestServe_UsageRetentionBelowOneDay: --usage-retention under a day, or
// not a duration, is one clear line, before anything starts.
func TestServe_UsageRetentionBelowOneDay(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"12h", "0d", "forever", "2027-01-01"} {
		r := run(t, "", "--db", newDBPath(t), "serve", "--listen", "127.0.0.1:0", "--usage-retention", v)
		checkFailed(t, r, "--usage-retention")
	}
}
