package cmd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
)

// listProviders runs `provider list --json` and decodes it.
func listProviders(t *testing.T, db string) []aiproxy.Provider {
	t.Helper()
	var ps []aiproxy.Provider
	if err := json.Unmarshal([]byte(runOK(t, "--db", db, "provider", "list", "--json")), &ps); err != nil {
		t.Fatalf("provider list --json: %v", err)
	}
	return ps
}

// ignoreID leaves out the store's row ids, which JSON does not carry, and
// the key states, which pkg/server's key pool tests pin down.
var ignoreID = cmpopts.IgnoreFields(aiproxy.Provider{}, "ID", "KeyStates")

func TestProviderAdd(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	add := func(stdin string, args ...string) {
		t.Helper()
		r := run(t, stdin, append([]string{"--db", db, "provider", "add"}, args...)...)
		if r.Code != 0 || r.Out != "" || r.Err != "" {
			t.Fatalf("provider add %v = exit %d, stdout %q, stderr %q; want exit 0 and no output", args, r.Code, r.Out, r.Err)
		}
	}
	add("", "api.openai.com", "sk-proj-first-key-0001")
	add("sk-proj-from-stdin-0002\r\n", "API.OpenAI.com.", "-")
	add("gsk_groq_key_0003\n", "api.groq.com", "-", "--base-url", "https://api.groq.com/openai/", "--no-inject-usage")
	add("", "api.groq.com", "gsk_groq_key_0004") // no --base-url: keeps the host's URL
	add("", "localhost:11434", "ollama-local", "--base-url", "http://127.0.0.1:11434", "--inject-usage=false")
	add("", "localhost:11434", "ollama-local-2", "--inject-usage")

	want := []aiproxy.Provider{
		{Host: "api.groq.com", BaseURL: "https://api.groq.com/openai", KeyCount: 2,
			KeyHints: []string{keys.Hint("gsk_groq_key_0003"), keys.Hint("gsk_groq_key_0004")}, InjectUsage: false,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}}, // the base URL holds /openai
		{Host: "api.openai.com", BaseURL: "https://api.openai.com", KeyCount: 2,
			KeyHints: []string{keys.Hint("sk-proj-first-key-0001"), keys.Hint("sk-proj-from-stdin-0002")}, InjectUsage: true,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
		{Host: "localhost:11434", BaseURL: "http://127.0.0.1:11434", KeyCount: 2,
			KeyHints: []string{keys.Hint("ollama-local"), keys.Hint("ollama-local-2")}, InjectUsage: true,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
	}
	if diff := cmp.Diff(want, listProviders(t, db), ignoreID); diff != "" {
		t.Errorf("providers (-want +got):\n%s", diff)
	}

	// The key read from stdin lost its line ending: the proxy gets it exactly.
	p, err := openService(t, db).Provider(t.Context(), "api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sk-proj-first-key-0001", "sk-proj-from-stdin-0002"}, p.Keys); diff != "" {
		t.Errorf("stored keys (-want +got):\n%s", diff)
	}
}

func TestProvider_errors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"add duplicate key", "", []string{"provider", "add", "api.openai.com", "sk-existing-1111"}, "provider api.openai.com already has this key"},
		{"add duplicate key from stdin", "sk-existing-1111\n", []string{"provider", "add", "api.openai.com", "-"}, "already has this key"},
		{"add different --base-url for a known host", "", []string{"provider", "add", "api.openai.com", "sk-new-2222", "--base-url", "https://proxy.example.com"}, "already has base URL https://api.openai.com"},
		{"add ftp base URL", "", []string{"provider", "add", "api.example.com", "sk-new-2222", "--base-url", "ftp://x"}, `base URL "ftp://x" must start with https:// or http://`},
		{"add base URL that is not a URL", "", []string{"provider", "add", "api.example.com", "sk-new-2222", "--base-url", "not a url"}, `base URL "not a url"`},
		{"add base URL with a query", "", []string{"provider", "add", "api.example.com", "sk-new-2222", "--base-url", "https://x.example.com/?a=b"}, "without user, query or fragment"},
		{"add empty key", "", []string{"provider", "add", "api.example.com", ""}, "provider key must not be empty"},
		{"add blank key", "", []string{"provider", "add", "api.example.com", "   "}, "provider key must not be empty"},
		{"add empty key from stdin", "\n", []string{"provider", "add", "api.example.com", "-"}, "provider key must not be empty"},
		{"add nothing on stdin", "", []string{"provider", "add", "api.example.com", "-"}, "provider key must not be empty"},
		{"add key with a space", "", []string{"provider", "add", "api.example.com", "sk bad"}, "printable ASCII without spaces"},
		{"add host with a scheme", "", []string{"provider", "add", "https://api.example.com", "sk-new-2222"}, "bare host[:port]"},
		{"add host with a path", "", []string{"provider", "add", "api.example.com/v1", "sk-new-2222"}, "bare host[:port]"},
		{"add both inject flags", "", []string{"provider", "add", "api.example.com", "sk-new-2222", "--inject-usage", "--no-inject-usage"}, "not both"},
		{"add without KEY", "", []string{"provider", "add", "api.example.com"}, "provider add: missing KEY"},
		{"add without HOST and KEY", "", []string{"provider", "add"}, "provider add: missing HOST KEY"},
		{"remove missing provider", "", []string{"provider", "remove", "api.example.com"}, "provider api.example.com not found"},
		{"remove missing key", "", []string{"provider", "remove", "api.openai.com", "sk-not-stored"}, "provider api.openai.com has no such key"},
		{"remove missing key from stdin", "sk-not-stored\n", []string{"provider", "remove", "api.openai.com", "-"}, "has no such key"},
		{"remove empty key from stdin", "\n", []string{"provider", "remove", "api.openai.com", "-"}, "provider key must not be empty"},
		{"remove key of missing provider", "", []string{"provider", "remove", "api.example.com", "sk-existing-1111"}, "provider api.example.com not found"},
		{"remove without HOST", "", []string{"provider", "remove"}, "provider remove: missing HOST"},
		{"remove three arguments", "", []string{"provider", "remove", "a.com", "k", "x"}, `unexpected argument "x"`},
		{"set missing provider", "", []string{"provider", "set", "api.example.com", "--inject-usage=false"}, "provider api.example.com not found"},
		{"set without a setting", "", []string{"provider", "set", "api.openai.com"}, "nothing to change"},
		{"set bad boolean", "", []string{"provider", "set", "api.openai.com", "--inject-usage=maybe"}, `invalid argument "maybe"`},
		{"unknown subcommand", "", []string{"provider", "del", "api.openai.com"}, `unknown command "del" for "aiproxy provider"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			runOK(t, "--db", db, "provider", "add", "api.openai.com", "sk-existing-1111")
			before := snapshot(t, db)
			r := run(t, tc.stdin, append([]string{"--db", db}, tc.args...)...)
			checkFailed(t, r, tc.want)
			if strings.Contains(r.Err, "sk-existing-1111") {
				t.Errorf("stderr %q shows a provider key", r.Err)
			}
			if diff := cmp.Diff(before, snapshot(t, db)); diff != "" {
				t.Errorf("aiproxy %s changed the database (-before +after):\n%s", strings.Join(tc.args, " "), diff)
			}
		})
	}
}

func TestProviderRemove(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	for _, k := range []string{"sk-one-1111", "sk-two-2222", "sk-three-3333"} {
		runOK(t, "--db", db, "provider", "add", "api.openai.com", k)
	}
	runOK(t, "--db", db, "provider", "add", "api.groq.com", "gsk-four-4444")

	if out := runOK(t, "--db", db, "provider", "remove", "api.openai.com", "sk-two-2222"); out != "" {
		t.Errorf("provider remove printed %q, want nothing", out)
	}
	r := run(t, "sk-one-1111\n", "--db", db, "provider", "remove", "API.OPENAI.COM", "-")
	if r.Code != 0 || r.Out != "" || r.Err != "" {
		t.Fatalf("provider remove HOST - = %+v, want exit 0 and no output", r)
	}
	want := []aiproxy.Provider{
		{Host: "api.groq.com", BaseURL: "https://api.groq.com", KeyCount: 1, KeyHints: []string{keys.Hint("gsk-four-4444")}, InjectUsage: true,
			APIRoot: "/openai/v1", Auth: "bearer", Headers: map[string]string{}},
		{Host: "api.openai.com", BaseURL: "https://api.openai.com", KeyCount: 1, KeyHints: []string{keys.Hint("sk-three-3333")}, InjectUsage: true,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
	}
	if diff := cmp.Diff(want, listProviders(t, db), ignoreID); diff != "" {
		t.Errorf("after removing two keys (-want +got):\n%s", diff)
	}

	runOK(t, "--db", db, "provider", "remove", "api.groq.com")
	// Removing the last key of a host removes the host.
	runOK(t, "--db", db, "provider", "remove", "api.openai.com", "sk-three-3333")
	if got := runOK(t, "--db", db, "provider", "list", "--json"); got != "[]\n" {
		t.Errorf("provider list --json after removing everything = %q, want \"[]\\n\"", got)
	}
}

func TestProviderSet(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	runOK(t, "--db", db, "provider", "add", "api.groq.com", "gsk-1111")
	inject := func() bool {
		t.Helper()
		ps := listProviders(t, db)
		if len(ps) != 1 {
			t.Fatalf("providers = %+v, want one", ps)
		}
		return ps[0].InjectUsage
	}
	if !inject() {
		t.Errorf("new provider: inject_usage = false, want true")
	}
	for _, v := range []bool{false, true, false} {
		arg := "--inject-usage=false"
		if v {
			arg = "--inject-usage=true"
		}
		if out := runOK(t, "--db", db, "provider", "set", "api.groq.com", arg); out != "" {
			t.Errorf("provider set printed %q, want nothing", out)
		}
		if got := inject(); got != v {
			t.Errorf("after provider set %s: inject_usage = %v", arg, got)
		}
	}
	// add without either flag keeps the setting.
	runOK(t, "--db", db, "provider", "add", "api.groq.com", "gsk-2222")
	if inject() {
		t.Errorf("provider add without --inject-usage turned inject_usage back on")
	}
}

func TestProviderList_golden(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	plain := runOK(t, "--db", db, "provider", "list")
	checkGolden(t, "provider_list", plain)
	js := runOK(t, "--db", db, "provider", "list", "--json")
	checkGolden(t, "provider_list_json", js)

	var ps []aiproxy.Provider
	if err := json.Unmarshal([]byte(js), &ps); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := providerListing(ps).writeTable(&buf, lipgloss.NewRenderer(&buf)); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "provider_list_table", buf.String())

	for _, secret := range []string{"sk-proj-aaaaaaaaaaaaaaaa1111", "sk-proj-bbbbbbbbbbbbbbbb2222", "gsk_cccccccccccccccc3333", "ollama"} {
		for name, out := range map[string]string{"plain": plain, "json": js, "table": buf.String()} {
			if strings.Contains(out, secret) {
				t.Errorf("provider list (%s) shows the key %s", name, keys.Hint(secret))
			}
		}
	}
}

func TestProviderList_empty(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	if got := runOK(t, "--db", db, "provider", "list", "--json"); got != "[]\n" {
		t.Errorf("provider list --json on an empty database = %q, want \"[]\\n\"", got)
	}
	got := runOK(t, "--db", db, "provider", "list")
	if want := "HOST  ALIAS  BASE URL  API ROOT  AUTH  KEYS  KEY HINTS  INJECT USAGE  HEADERS\n"; got != want {
		t.Errorf("provider list on an empty database = %q, want %q", got, want)
	}
}
