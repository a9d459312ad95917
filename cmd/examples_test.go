package cmd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// The example tests run every aiproxy and curl command that README.md's
// shell code blocks and the commands' --help Example sections show, as a
// user pasting them line by line would, so an example that stops working
// (or never worked) fails here. The commands are extracted, not listed: a
// new example is covered the moment it is written.
//
// A session is one shell: its own folder (the working directory), database
// (AIPROXY_DB), variables and mock upstream. aiproxy runs in-process, with
// only the session's exported variables as its environment; `serve` runs in
// the background on a free port; curl is done with net/http. README.md gets
// one session per "## " section, in order; each command's Example, one
// session of its own, seeded by seedHelp.
//
// What a real shell would need and a test cannot have is rewritten, in
// plain sight here: 127.0.0.1:8787 (and HOST:8787) becomes serve's real
// address, --listen a free port, a provider's scheme and host the mock
// upstream (its path is kept, so a base URL with a path that doubles the
// request's shows up as a 404), a "sk-cfw…" placeholder the last user key
// made, and "…" inside any other argument x.

// notRun are programs that examples show but the runner does not run, and
// why. Anything else unknown fails the test: teach the runner, or add it here.
var notRun = map[string]string{
	"go":         "building, testing and benchmarking: the test suite itself (go run . ARGS is run as aiproxy ARGS)",
	"git":        "cloning the repository",
	"cd":         "changing to the clone",
	"bash":       "the CI script",
	"goreleaser": "release builds",
	"ulimit":     "a shell limit for 10,000 streams",
}

// pendingExamples are examples that wait for a change outside cmd/, and
// why. Each must fail until then; one that works fails the test, so that
// the entry is removed.
var pendingExamples = map[string]string{}

// sectionSetup prepares a README section that relies on state the reader
// made in an earlier section (a user, providers, a running serve).
var sectionSetup = map[string]func(*session){
	"Using the proxy":     seedProxy,
	"Your own key: `/me`": seedProxy,
	"Storage: SQLite or PostgreSQL": func(s *session) {
		if _, err := openService(s.t, "aiproxy.db").CreateUser(s.t.Context(), "alice", admin.Expiry{}); err != nil {
			s.t.Fatal(err)
		}
	},
}

// seedProxy is the state after the quick start: user janlay (the last key
// made), providers api.openai.com and api.groq.com, serve running.
func seedProxy(s *session) {
	s.run(exampleLine{src: "setup", line: 0}, "aiproxy user create janlay")
	s.run(exampleLine{src: "setup", line: 0}, "echo sk-proj-setup-openai | aiproxy provider add api.openai.com -")
	s.run(exampleLine{src: "setup", line: 0}, "echo gsk_setup_groq | aiproxy provider add api.groq.com -")
	s.run(exampleLine{src: "setup", line: 0}, "aiproxy serve")
}

// Files seedHelp writes in a --help session's folder, for `< FILE` examples.
var helpFiles = map[string]string{
	"groq.key":       "gsk_from_groq_key_file\n",
	"openai.key":     "sk-proj-from-openai-key-file\n",
	"old-openai.key": "sk-proj-seeded-old-key\n",
	"secret.key":     pgTestSecret + "\n",
}

// seedHelp is the state every --help example starts from: user alice with
// one request on record, and the providers the examples change or remove.
func seedHelp(s *session) {
	t := s.t
	for name, body := range helpFiles {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	svc := openService(t, s.db)
	ctx := t.Context()
	key, err := svc.CreateUser(ctx, "alice", admin.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	s.noteKey(key)
	u, err := svc.Authenticate(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rec := aiproxy.Usage{Time: time.Now().Add(-time.Hour), UserID: u.ID, UserName: "alice", Provider: "api.openai.com",
		Model: "gpt-4o-mini", Path: "/v1/chat/completions", Status: 200}
	if err := svc.RecordUsage(ctx, []aiproxy.Usage{rec}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []admin.ProviderKey{
		{Host: "api.openai.com", Key: "sk-proj-seeded-old-key", BaseURL: s.mock.URL},
		{Host: "api.groq.com", Key: "gsk_seeded_key", BaseURL: s.mock.URL},
	} {
		if err := svc.AddProviderKey(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
}

// exampleLine says where a command comes from, for failure messages.
type exampleLine struct {
	src  string // README.md, or "aiproxy provider add --help"
	line int
}

func (l exampleLine) String() string {
	if l.line == 0 {
		return l.src
	}
	return fmt.Sprintf("%s:%d", l.src, l.line)
}

// block is a shell code block with its first line's number.
type block struct {
	lang    string
	line    int
	text    string
	section string // the "## " heading it is under
}

// readmeBlocks returns README.md's code blocks.
func readmeBlocks(t *testing.T) []block {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	var cur *block
	section := "top" // before the first "## "
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: i + 2, section: section}
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		}
	}
	if cur != nil {
		t.Fatalf("README.md: code block at line %d is not closed", cur.line)
	}
	return blocks
}

// isShell reports whether a code block's language is one the runner runs.
func isShell(lang string) bool {
	return lang == "sh" || lang == "bash" || lang == "shell" || lang == "console"
}

// TestREADME_examples runs README.md's shell blocks, one session per "## "
// section.
func TestREADME_examples(t *testing.T) {
	var order []string
	bySection := map[string][]block{}
	for _, b := range readmeBlocks(t) {
		if !isShell(b.lang) {
			if b.lang == "" && regexp.MustCompile(`(?m)^\s*(\$ )?(\./)?(aiproxy|curl) `).MatchString(b.text) {
				t.Errorf("README.md:%d: a code block without a language shows commands: mark it sh or console", b.line)
			}
			continue
		}
		if _, ok := bySection[b.section]; !ok {
			order = append(order, b.section)
		}
		bySection[b.section] = append(bySection[b.section], b)
	}
	ran := 0
	for _, sec := range order {
		t.Run(sec, func(t *testing.T) {
			s := newSession(t)
			if setup := sectionSetup[sec]; setup != nil {
				setup(s)
			}
			for _, b := range bySection[sec] {
				if b.lang == "console" {
					s.runConsole("README.md", b.line, b.text)
				} else {
					s.runScript(exampleLine{"README.md", b.line}, b.text)
				}
			}
			s.checkProviders()
			ran += s.ran
		})
	}
	t.Logf("ran %d aiproxy and curl commands from README.md", ran)
	// Guard against an extraction that silently finds nothing.
	if ran < 40 {
		t.Errorf("ran %d aiproxy and curl commands from README.md, want at least 40: is the extraction broken?", ran)
	}
	for sec := range sectionSetup {
		if _, ok := bySection[sec]; !ok {
			t.Errorf("sectionSetup names README section %q, which has no shell block", sec)
		}
	}
}

// helpExamples returns every command's Example text, by command path.
func helpExamples() map[string]string {
	root := newRoot(&appContext{v: viper.New(), streams: Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}})
	out := map[string]string{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example != "" {
			out[c.CommandPath()] = c.Example
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return out
}

// TestHelp_examples runs each command's --help examples in a seeded
// session of its own.
func TestHelp_examples(t *testing.T) {
	ex := helpExamples()
	paths := make([]string, 0, len(ex))
	for p := range ex {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			s := newSession(t)
			seedHelp(s)
			s.runScript(exampleLine{src: p + " --help"}, ex[p])
			if s.ran == 0 {
				t.Errorf("%s --help: no command ran from its Example", p)
			}
			s.checkProviders()
		})
	}
}

// TestHelp_everyCommandWithArgumentsHasExamples checks that each command
// whose usage names an argument shows examples in its --help.
func TestHelp_everyCommandWithArgumentsHasExamples(t *testing.T) {
	t.Parallel()
	root := newRoot(&appContext{v: viper.New(), streams: Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		takesArgs := false
		for _, w := range strings.Fields(c.Use)[1:] {
			if w[0] >= 'A' && w[0] <= 'Z' {
				takesArgs = true
			}
		}
		if takesArgs && c.Example == "" {
			t.Errorf("%s (usage %q) takes arguments but has no Example", c.CommandPath(), c.Use)
		}
	}
	walk(root)
}

// ---- the session ----

type session struct {
	t       *testing.T
	dir, db string
	pgDSN   string            // the session's PostgreSQL database, made on first use
	vars    map[string]string // shell variables
	exports map[string]bool   // which of them are exported
	mock    *httptest.Server
	keys    map[string]bool // user keys made in this session
	lastKey string
	serve   *bgServe
	ran     int // aiproxy and curl commands run

	mu        sync.Mutex
	mockPaths []string
}

// bgServe is `aiproxy serve` running in the background.
type bgServe struct {
	addr string
	logs *syncBuffer
	stop context.CancelFunc
	exit chan int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newSession(t *testing.T) *session {
	dir := t.TempDir()
	t.Chdir(dir) // relative paths in examples land in the session's folder
	s := &session{
		t: t, dir: dir, db: filepath.Join(dir, "data", "aiproxy.db"),
		vars: map[string]string{}, exports: map[string]bool{}, keys: map[string]bool{},
	}
	s.setVar("AIPROXY_DB", s.db, true)
	s.setVar("HOME", filepath.Join(dir, "home"), true)
	s.setVar("GROQ_KEY", "gsk_from_env_GROQ_KEY", true) // echo "$GROQ_KEY" | …
	fake := fakeai.New()
	s.mock = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.mockPaths = append(s.mockPaths, r.URL.Path)
		s.mu.Unlock()
		// The paths OpenAI-compatible providers serve: /v1/… and Groq's
		// /openai/v1/…. A base URL that repeats the request's prefix
		// (…/openai + /openai/v1/…) lands here as a 404.
		if !strings.HasPrefix(r.URL.Path, "/v1/") && !strings.HasPrefix(r.URL.Path, "/openai/v1/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":{"message":"mock upstream: no route %s","type":"invalid_request_error","code":"unknown_url"}}`, r.URL.Path)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(s.mock.Close)
	t.Cleanup(s.stopServe)
	return s
}

func (s *session) setVar(name, value string, export bool) {
	s.vars[name] = value
	if export {
		s.exports[name] = true
	}
}

// environ is what a command sees: the exported variables, plus the
// assignments before the command.
func (s *session) environ(prefix map[string]string) func(string) (string, bool) {
	env := map[string]string{}
	for k := range s.exports {
		env[k] = s.vars[k]
	}
	for k, v := range prefix {
		env[k] = v
	}
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

var userKeyRE = regexp.MustCompile(`^sk-cfw[A-Za-z0-9]{45}$`)

func (s *session) noteKey(k string) {
	k = strings.TrimSpace(k)
	if userKeyRE.MatchString(k) {
		s.keys[k] = true
		s.lastKey = k
	}
}

func (s *session) stopServe() {
	if s.serve == nil {
		return
	}
	s.serve.stop()
	select {
	case code := <-s.serve.exit:
		if code != 0 {
			s.t.Errorf("serve exited with %d on SIGTERM; log:\n%s", code, s.serve.logs.String())
		}
	case <-time.After(30 * time.Second):
		s.t.Errorf("serve did not stop")
	}
	s.serve = nil
}

// runScript runs a shell block (or an Example) line by line.
func (s *session) runScript(at exampleLine, text string) {
	s.t.Helper()
	cmds, err := parseShell(text)
	if err != nil {
		s.t.Errorf("%s: %v", at, err)
		return
	}
	for _, c := range cmds {
		l := at
		if l.line > 0 {
			l.line += c.line
		}
		s.runPipeline(l, c)
	}
}

// runConsole runs a console block: "$ " lines are commands, the lines
// after one are what it prints. An "aiproxy: …" line means the command
// must fail with exactly that line; a table header, JSON or a key is
// checked against what the command printed.
func (s *session) runConsole(src string, first int, text string) {
	s.t.Helper()
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "$ ") {
			s.t.Errorf("%s:%d: console line %q is neither a command nor output of one", src, first+i, lines[i])
			continue
		}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(lines[j], "$ ") {
			j++
		}
		at := exampleLine{src, first + i}
		want := strings.Join(lines[i+1:j], "\n")
		cmds, err := parseShell(strings.TrimPrefix(lines[i], "$ "))
		if err != nil || len(cmds) != 1 {
			s.t.Errorf("%s: %q: want one command (%v)", at, lines[i], err)
		} else {
			r := s.runPipelineExpect(at, cmds[0], strings.HasPrefix(want, "aiproxy: "))
			s.checkOutput(at, want, r)
		}
		i = j - 1
	}
}

// checkOutput compares what a console block shows with what ran.
func (s *session) checkOutput(at exampleLine, want string, r cmdResult) {
	t := s.t
	t.Helper()
	got := strings.TrimRight(r.out, "\n")
	switch {
	case want == "":
	case strings.HasPrefix(want, "aiproxy: "):
		if strings.TrimRight(r.err, "\n") != want {
			t.Errorf("%s: stderr = %q, README shows %q", at, r.err, want)
		}
	case strings.HasPrefix(want, "sk-cfw"):
		if !userKeyRE.MatchString(got) {
			t.Errorf("%s: printed %q, README shows a key", at, got)
		}
	case strings.HasPrefix(want, "[") || strings.HasPrefix(want, "{"):
		var w, g any
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Errorf("%s: README's JSON does not parse: %v", at, err)
			return
		}
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			t.Errorf("%s: printed %q, not JSON: %v", at, got, err)
			return
		}
		if wk, gk := jsonKeys(w), jsonKeys(g); gk != nil && !slices.Equal(wk, gk) {
			t.Errorf("%s: JSON keys %v, README shows %v", at, gk, wk)
		}
	case regexp.MustCompile(`^[A-Z][A-Z ]+$`).MatchString(strings.SplitN(want, "\n", 2)[0]):
		wantHead := strings.Fields(strings.SplitN(want, "\n", 2)[0])
		gotHead := strings.Fields(strings.SplitN(got, "\n", 2)[0])
		if !slices.Equal(wantHead, gotHead) {
			t.Errorf("%s: table header %q, README shows %q", at, gotHead, wantHead)
		}
	}
}

// jsonKeys returns the sorted keys of v, or of v's first element when v is
// an array; nil for an empty array.
func jsonKeys(v any) []string {
	if a, ok := v.([]any); ok {
		if len(a) == 0 {
			return nil
		}
		v = a[0]
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// run parses and runs one line of script, for setups.
func (s *session) run(at exampleLine, line string) {
	s.t.Helper()
	s.runScript(at, line)
}

type cmdResult struct {
	out, err string
	code     int
}

func (s *session) runPipeline(at exampleLine, p pipeline) cmdResult {
	s.t.Helper()
	return s.runPipelineExpect(at, p, false)
}

// runPipelineExpect runs p; a command that fails is an error unless
// wantFail, when one that succeeds is.
func (s *session) runPipelineExpect(at exampleLine, p pipeline, wantFail bool) cmdResult {
	s.t.Helper()
	var r cmdResult
	stdin := ""
	for i, c := range p.cmds {
		if c.stdin != nil {
			name, err := s.expand(at, c.stdin)
			if err != nil {
				s.t.Errorf("%s: %v", at, err)
				return r
			}
			b, err := os.ReadFile(filepath.Join(s.dir, name))
			if err != nil {
				s.t.Errorf("%s: %s: < %s: %v", at, p.text, name, err)
				return r
			}
			stdin = string(b)
		}
		r = s.runCommand(at, c, stdin, i > 0 || c.stdin != nil)
		if r.code == -1 {
			return r // not run
		}
		if c.stdout != nil {
			name, err := s.expand(at, c.stdout)
			if err == nil {
				err = os.WriteFile(filepath.Join(s.dir, name), []byte(r.out), 0o600)
			}
			if err != nil {
				s.t.Errorf("%s: %s: > %s: %v", at, p.text, name, err)
			}
			r.out = ""
		}
		stdin = r.out
	}
	if why, ok := pendingExamples[p.text]; ok {
		if r.code == 0 {
			s.t.Errorf("%s: %s now works: remove it from pendingExamples (%s)", at, p.text, why)
		}
		return r
	}
	if r.code != 0 && !wantFail {
		s.t.Errorf("%s: %s\n\texit %d, stderr %q, stdout %q", at, p.text, r.code, r.err, r.out)
	}
	if r.code == 0 && wantFail {
		s.t.Errorf("%s: %s succeeded, README shows it failing", at, p.text)
	}
	return r
}

// runCommand expands and runs one command; hasStdin says whether stdin
// came from a pipe or a file (otherwise `-` keys are "pasted").
func (s *session) runCommand(at exampleLine, c command, stdin string, hasStdin bool) cmdResult {
	s.t.Helper()
	var argv []string
	prefix := map[string]string{}
	for i, w := range c.words {
		v, err := s.expand(at, w)
		if err != nil {
			s.t.Errorf("%s: %v", at, err)
			return cmdResult{code: 1}
		}
		if len(argv) == 0 && !w.quotedAt(0) {
			if name, val, ok := strings.Cut(v, "="); ok && shellName.MatchString(name) {
				prefix[name] = val
				if i == len(c.words)-1 { // NAME=value alone: a shell variable
					for k, v := range prefix {
						s.setVar(k, v, false)
					}
				}
				continue
			}
		}
		argv = append(argv, v)
	}
	if len(argv) == 0 {
		return cmdResult{}
	}
	name := argv[0]
	switch {
	case name == "aiproxy" || name == "./aiproxy":
		return s.aiproxy(at, argv[1:], prefix, stdin, hasStdin, c.background)
	case name == "go" && len(argv) > 2 && argv[1] == "run" && argv[2] == ".":
		return s.aiproxy(at, argv[3:], prefix, stdin, hasStdin, c.background)
	case name == "curl":
		return s.curl(at, argv[1:])
	case name == "kill" && len(argv) == 2 && argv[1] == "%1":
		s.stopServe() // the serve started with &
		return cmdResult{}
	case name == "echo":
		return cmdResult{out: strings.Join(argv[1:], " ") + "\n"}
	case name == "export":
		for _, a := range argv[1:] {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				v = s.vars[k]
			}
			s.setVar(k, v, true)
		}
		return cmdResult{}
	case name == "openssl" && len(argv) == 4 && argv[1] == "rand" && argv[2] == "-hex":
		n, err := strconv.Atoi(argv[3])
		if err != nil {
			return cmdResult{code: 1, err: err.Error()}
		}
		b := make([]byte, n)
		rand.Read(b)
		return cmdResult{out: hex.EncodeToString(b) + "\n"}
	case name == "openssl" && len(argv) == 4 && argv[1] == "rand" && argv[2] == "-base64":
		n, err := strconv.Atoi(argv[3])
		if err != nil {
			return cmdResult{code: 1, err: err.Error()}
		}
		b := make([]byte, n)
		rand.Read(b)
		return cmdResult{out: base64.StdEncoding.EncodeToString(b) + "\n"}
	case name == "date" && len(argv) == 2 && argv[1] == "+%F":
		return cmdResult{out: time.Now().Format("2006-01-02") + "\n"}
	}
	if _, ok := notRun[name]; ok {
		return cmdResult{code: -1}
	}
	s.t.Errorf("%s: the example runner cannot run %q: teach it (examples_test.go) or list it in notRun", at, name)
	return cmdResult{code: 1}
}

var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// aiproxy runs aiproxy in-process; serve goes to the background.
func (s *session) aiproxy(at exampleLine, args []string, prefix map[string]string, stdin string, hasStdin, background bool) cmdResult {
	s.t.Helper()
	s.ran++
	args = slices.Clone(args)
	for i, a := range args {
		if store.IsPostgres(a) { // an example's PostgreSQL: one of pgtest's, per session
			if s.pgDSN == "" {
				s.pgDSN = pgtest.NewDatabase(s.t)
			}
			args[i] = s.pgDSN
			continue
		}
		if !strings.HasPrefix(a, "sk-cfw") {
			args[i] = strings.ReplaceAll(a, "…", "x")
		}
	}
	sub := subcommand(args)
	switch sub {
	case "serve":
		return s.startServe(at, args, prefix)
	case "provider add", "provider set":
		args = s.mockBaseURL(args, sub == "provider add")
	}
	if !hasStdin && slices.Contains(args, "-") {
		stdin = "sk-pasted-at-the-prompt\n" // what the user pastes
	}
	var out, errb bytes.Buffer
	code := execute(s.t.Context(), args, Streams{In: strings.NewReader(stdin), Out: &out, Err: &errb}, s.environ(prefix))
	s.noteKey(out.String())
	return cmdResult{out: out.String(), err: errb.String(), code: code}
}

// subcommand returns the command path in args ("provider add"), skipping
// flags.
func subcommand(args []string) string {
	var words []string
	for i := 0; i < len(args) && len(words) < 2; i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if (a == "--db" || a == "--config") && i+1 < len(args) {
				i++
			}
			continue
		}
		words = append(words, a)
	}
	if len(words) > 0 && words[0] != "user" && words[0] != "provider" {
		words = words[:1]
	}
	return strings.Join(words, " ")
}

// mockBaseURL points a provider's base URL at the mock upstream, keeping
// its path; add says a missing --base-url is to be added.
func (s *session) mockBaseURL(args []string, add bool) []string {
	for i, a := range args {
		var raw string
		switch {
		case a == "--base-url" && i+1 < len(args):
			raw = args[i+1]
		case strings.HasPrefix(a, "--base-url="):
			raw = strings.TrimPrefix(a, "--base-url=")
		default:
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return args // the command itself must refuse it
		}
		m, _ := url.Parse(s.mock.URL)
		u.Scheme, u.Host = m.Scheme, m.Host
		if a == "--base-url" {
			args[i+1] = u.String()
		} else {
			args[i] = "--base-url=" + u.String()
		}
		return args
	}
	if add {
		args = append(args, "--base-url", s.mock.URL)
	}
	return args
}

func (s *session) startServe(at exampleLine, args []string, prefix map[string]string) cmdResult {
	s.t.Helper()
	s.stopServe() // a reader stops the previous serve first
	var a []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--listen" && i+1 < len(args):
			i++
		case strings.HasPrefix(args[i], "--listen="):
		default:
			a = append(a, args[i])
		}
	}
	a = append(a, "--listen", "127.0.0.1:0", "--log-format", "json")
	ctx, cancel := context.WithCancel(context.Background())
	b := &bgServe{logs: &syncBuffer{}, stop: cancel, exit: make(chan int, 1)}
	env := s.environ(prefix)
	go func() {
		b.exit <- execute(ctx, a, Streams{In: strings.NewReader(""), Out: io.Discard, Err: b.logs}, env)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for b.addr == "" {
		select {
		case code := <-b.exit:
			cancel()
			s.t.Errorf("%s: aiproxy %s exited with %d: %s", at, strings.Join(args, " "), code, b.logs.String())
			return cmdResult{code: code}
		case <-time.After(10 * time.Millisecond):
		}
		if first, _, ok := strings.Cut(b.logs.String(), "\n"); ok {
			var m struct{ Listen string }
			if err := json.Unmarshal([]byte(first), &m); err != nil || m.Listen == "" {
				cancel()
				s.t.Fatalf("%s: serve's first log line %q names no address", at, first)
			}
			b.addr = m.Listen
		}
		if time.Now().After(deadline) {
			cancel()
			s.t.Fatalf("%s: serve did not start: %s", at, b.logs.String())
		}
	}
	s.serve = b
	return cmdResult{}
}

// curl does what curl would with the options examples use.
func (s *session) curl(at exampleLine, args []string) cmdResult {
	s.t.Helper()
	s.ran++
	method, body, rawURL := "", "", ""
	hasBody := false
	header := http.Header{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 >= len(args) {
				s.t.Errorf("%s: curl %s needs a value", at, a)
				return ""
			}
			i++
			return args[i]
		}
		switch a {
		case "-X", "--request":
			method = next()
		case "-H", "--header":
			k, v, ok := strings.Cut(next(), ":")
			if !ok {
				s.t.Errorf("%s: curl -H %q is not Name: value", at, args[i])
			}
			v = strings.TrimSpace(v)
			if strings.Contains(v, "sk-cfw") {
				v = regexp.MustCompile(`sk-cfw[^\s"']*`).ReplaceAllStringFunc(v, func(k string) string {
					if s.keys[k] {
						return k
					}
					return s.lastKey
				})
			}
			header.Add(strings.TrimSpace(k), v)
		case "-d", "--data", "--data-raw":
			body, hasBody = strings.ReplaceAll(next(), "…", "x"), true
		case "-s", "-S", "-sS", "--silent", "--fail", "-f":
		default:
			if strings.HasPrefix(a, "-") {
				s.t.Errorf("%s: the example runner's curl does not know %s", at, a)
				return cmdResult{code: 1}
			}
			rawURL = a
		}
	}
	if method == "" {
		method = "GET"
		if hasBody {
			method = "POST"
		}
	}
	if s.serve == nil {
		s.t.Errorf("%s: curl with no serve running", at)
		return cmdResult{code: 1}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		s.t.Errorf("%s: curl %q: %v", at, rawURL, err)
		return cmdResult{code: 1}
	}
	if u.Port() == "8787" || u.Hostname() == "HOST" {
		u.Scheme, u.Host = "http", s.serve.addr
	} else {
		s.t.Errorf("%s: curl %s: the runner sends only to 127.0.0.1:8787 or HOST:8787 (the example's serve)", at, rawURL)
		return cmdResult{code: 1}
	}
	var rb io.Reader
	if hasBody {
		rb = strings.NewReader(body)
		if header.Get("Content-Type") == "" {
			header.Set("Content-Type", "application/x-www-form-urlencoded") // as curl -d does
		}
	}
	req, err := http.NewRequestWithContext(s.t.Context(), method, u.String(), rb)
	if err != nil {
		s.t.Errorf("%s: %v", at, err)
		return cmdResult{code: 1}
	}
	req.Header = header
	client := &http.Client{Timeout: 20 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return cmdResult{code: 7, err: err.Error()}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	s.noteKey(string(b))
	r := cmdResult{out: string(b)}
	if res.StatusCode >= 400 {
		s.mu.Lock()
		paths := slices.Clone(s.mockPaths)
		s.mu.Unlock()
		r.code = 22 // as curl --fail
		r.err = fmt.Sprintf("HTTP %d (upstream paths so far: %v)", res.StatusCode, paths)
	}
	return r
}

// clientPaths are the chat completion paths clients of each provider use;
// others use /v1/chat/completions.
var clientPaths = map[string]string{"api.groq.com": "/openai/v1/chat/completions"}

// checkProviders ends a session: a chat completion through serve to every
// provider the examples left pointing at the mock upstream must succeed, so
// an example whose base URL would double the request's path prefix fails.
func (s *session) checkProviders() {
	t := s.t
	t.Helper()
	svc := openService(t, s.db)
	ps, err := svc.ListProviders(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key, err := svc.CreateUser(t.Context(), "example-check", admin.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if !strings.HasPrefix(p.BaseURL, s.mock.URL) {
			continue // a base URL given over HTTP, not by an aiproxy command
		}
		if s.serve == nil {
			s.startServe(exampleLine{src: "checkProviders"}, []string{"serve"}, nil)
			if s.serve == nil {
				return
			}
		}
		path := clientPaths[p.Host]
		if path == "" {
			path = "/v1/chat/completions"
		}
		req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+s.serve.addr+path,
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Host-Final", p.Host)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("provider %s: POST %s: %v", p.Host, path, err)
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			s.mu.Lock()
			seen := slices.Clone(s.mockPaths)
			s.mu.Unlock()
			t.Errorf("provider %s as the examples left it (base URL %s): POST %s got %d %s; the upstream saw %v",
				p.Host, strings.Replace(p.BaseURL, s.mock.URL, "https://"+p.Host, 1), path, res.StatusCode, body, seen)
		}
	}
}

// ---- a small shell parser: words, quotes, $VAR, $(…), |, &&, ;, &, < ----

// wordPart is a piece of a word: literal ('\” quoted), or to expand
// (bare or '"' quoted); subst marks a $( … ) outside quotes.
type wordPart struct {
	text  string
	quote byte
	subst bool
}

type word []wordPart

func (w word) quotedAt(i int) bool { return i < len(w) && w[i].quote != 0 }

type command struct {
	words      []word
	stdin      word // < FILE
	stdout     word // > FILE
	background bool
}

type pipeline struct {
	cmds []command
	line int // offset of its first line in the text
	text string
}

func parseShell(src string) ([]pipeline, error) {
	var (
		out      []pipeline
		p        pipeline
		c        command
		w        word
		lit      strings.Builder
		line     int
		redirect bool
		redirOut bool
		start    = 0
		comment  = -1 // where a comment starts on the current line
	)
	flushLit := func() {
		if lit.Len() > 0 {
			w = append(w, wordPart{text: lit.String()})
			lit.Reset()
		}
	}
	endWord := func() {
		flushLit()
		if len(w) == 0 {
			return
		}
		switch {
		case redirect:
			c.stdin, redirect = w, false
		case redirOut:
			c.stdout, redirOut = w, false
		default:
			c.words = append(c.words, w)
		}
		w = nil
	}
	endCmd := func() {
		endWord()
		if len(c.words) > 0 {
			p.cmds = append(p.cmds, c)
		}
		c = command{}
	}
	endPipe := func(end int) {
		endCmd()
		if comment >= start && comment < end {
			end = comment
		}
		comment = -1
		if len(p.cmds) > 0 {
			p.text = strings.Join(strings.Fields(strings.ReplaceAll(src[start:end], "\\\n", " ")), " ")
			out = append(out, p)
		}
		p = pipeline{line: line}
		start = end
	}
	p.line = 0
	rs := src
	for i := 0; i < len(rs); i++ {
		ch := rs[i]
		switch {
		case ch == '\\' && i+1 < len(rs):
			i++
			if rs[i] == '\n' {
				line++
			} else {
				lit.WriteByte(rs[i])
			}
		case ch == '\n' || ch == ';':
			endPipe(i)
			if ch == '\n' {
				line++
				p.line = line
			}
			start = i + 1
		case ch == ' ' || ch == '\t':
			endWord()
		case ch == '#' && lit.Len() == 0 && len(w) == 0:
			comment = i
			for i+1 < len(rs) && rs[i+1] != '\n' {
				i++
			}
		case ch == '\'':
			j := strings.IndexByte(rs[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed '")
			}
			flushLit()
			text := rs[i+1 : i+1+j]
			line += strings.Count(text, "\n")
			w = append(w, wordPart{text: text, quote: '\''})
			i += j + 1
		case ch == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.IndexByte(`"\$`+"`", rs[j+1]) >= 0 {
					j++
				}
				b.WriteByte(rs[j])
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("unclosed \"")
			}
			flushLit()
			line += strings.Count(b.String(), "\n")
			w = append(w, wordPart{text: b.String(), quote: '"'})
			i = j
		case ch == '$' && i+1 < len(rs) && rs[i+1] == '(':
			depth, j := 0, i+1
			for ; j < len(rs); j++ {
				if rs[j] == '(' {
					depth++
				} else if rs[j] == ')' {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("unclosed $(")
			}
			flushLit()
			w = append(w, wordPart{text: rs[i+2 : j], subst: true})
			i = j
		case ch == '|':
			if i+1 < len(rs) && rs[i+1] == '|' {
				return nil, fmt.Errorf("|| is not supported")
			}
			endCmd()
		case ch == '&':
			if i+1 < len(rs) && rs[i+1] == '&' {
				endPipe(i)
				i++
			} else {
				c.background = true
				endPipe(i)
			}
			start = i + 1
		case ch == '<':
			endWord()
			redirect = true
		case ch == '>':
			if i+1 < len(rs) && rs[i+1] == '>' {
				return nil, fmt.Errorf(">> is not supported by the example runner")
			}
			endWord()
			redirOut = true
		default:
			lit.WriteByte(ch)
		}
	}
	endPipe(len(rs))
	return out, nil
}

// expand joins a word's parts, expanding $NAME, ${NAME} and $( … ).
func (s *session) expand(at exampleLine, w word) (string, error) {
	var b strings.Builder
	for _, p := range w {
		switch {
		case p.quote == '\'':
			b.WriteString(p.text)
		case p.subst:
			v, err := s.substitute(at, p.text)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		default:
			v, err := s.expandVars(at, p.text)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		}
	}
	return b.String(), nil
}

var varRE = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\$\(`)

func (s *session) expandVars(at exampleLine, text string) (string, error) {
	var b strings.Builder
	for {
		loc := varRE.FindStringIndex(text)
		if loc == nil {
			b.WriteString(text)
			return b.String(), nil
		}
		b.WriteString(text[:loc[0]])
		m := text[loc[0]:loc[1]]
		if m == "$(" {
			end := strings.IndexByte(text[loc[1]:], ')')
			if end < 0 {
				return "", fmt.Errorf("unclosed $(")
			}
			v, err := s.substitute(at, text[loc[1]:loc[1]+end])
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			text = text[loc[1]+end+1:]
			continue
		}
		b.WriteString(s.vars[strings.Trim(m, "${}")])
		text = text[loc[1]:]
	}
}

// substitute runs a $( … ) command and returns its output less trailing
// newlines.
func (s *session) substitute(at exampleLine, src string) (string, error) {
	ps, err := parseShell(src)
	if err != nil || len(ps) != 1 {
		return "", fmt.Errorf("$(%s): want one command (%v)", src, err)
	}
	r := s.runPipeline(at, ps[0])
	if r.code == -1 {
		return "", fmt.Errorf("$(%s): not run by the example runner", src)
	}
	return strings.TrimRight(r.out, "\n"), nil
}
