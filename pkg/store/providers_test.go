package store_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// addKey stores secret for host through the store API the way the admin
// service does.
func addKey(t *testing.T, d *store.DB, host, baseURL, secret string) error {
	t.Helper()
	return d.AddProviderKey(t.Context(), store.ProviderKey{Host: host, BaseURL: baseURL, InjectUsage: nil, Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, t0)
}

func TestAddProviderKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	const (
		groq1 = "gsk_0000000000000000000001"
		groq2 = "gsk_0000000000000000000002"
		oai   = "sk-proj-aaaaaaaaaaaaaaaaaaaaaa"
	)
	if err := addKey(t, d, "api.groq.com", "https://api.groq.com/openai", groq1); err != nil {
		t.Fatalf("AddProviderKey(new host) error = %v", err)
	}
	// A second key with no base URL keeps the host's URL.
	if err := addKey(t, d, "api.groq.com", "", groq2); err != nil {
		t.Fatalf("AddProviderKey(second key, no URL) error = %v", err)
	}
	// The same URL again is fine.
	if err := addKey(t, d, "api.openai.com", "https://api.openai.com", oai); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		host    string
		baseURL string
		secret  string
		code    string
	}{
		{"same key twice", "api.groq.com", "", groq1, aiproxy.ECONFLICT},
		{"same key twice with its URL", "api.groq.com", "https://api.groq.com/openai", groq1, aiproxy.ECONFLICT},
		{"different base URL", "api.groq.com", "https://evil.example/openai", "gsk_new", aiproxy.ECONFLICT},
		{"new host without base URL", "api.mistral.ai", "", "m-key", aiproxy.EINVALID},
	}
	for _, tc := range tests {
		err := addKey(t, d, tc.host, tc.baseURL, tc.secret)
		wantCode(t, fmt.Sprintf("AddProviderKey(%s: %s)", tc.name, tc.host), err, tc.code)
		if err != nil && strings.Contains(err.Error(), tc.secret) {
			t.Errorf("AddProviderKey(%s) error %q contains the key", tc.name, err)
		}
	}
	// The same key may serve two hosts.
	if err := addKey(t, d, "api.openai.com", "", groq1); err != nil {
		t.Errorf("AddProviderKey(key of another host) error = %v", err)
	}

	got, err := d.ListProviders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []aiproxy.Provider{
		{Host: "api.groq.com", BaseURL: "https://api.groq.com/openai", KeyCount: 2,
			KeyHints: []string{keys.Hint(groq1), keys.Hint(groq2)}, InjectUsage: true,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
		{Host: "api.openai.com", BaseURL: "https://api.openai.com", KeyCount: 2,
			KeyHints: []string{keys.Hint(oai), keys.Hint(groq1)}, InjectUsage: true,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
	}
	if diff := cmp.Diff(want, got, ignoreProviderID); diff != "" {
		t.Errorf("ListProviders() mismatch (-want +got):\n%s", diff)
	}

	p, err := d.ProviderByHost(ctx, "api.groq.com")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{groq1, groq2}, p.Keys); diff != "" {
		t.Errorf("ProviderByHost().Keys mismatch (-want +got):\n%s", diff)
	}
	wantCode(t, "ProviderByHost(unknown)", errOf(d.ProviderByHost(ctx, "api.unknown.com")), aiproxy.ENOTFOUND)
	// Lookups are exact: hosts are normalised before they reach the store.
	wantCode(t, "ProviderByHost(upper case)", errOf(d.ProviderByHost(ctx, "API.GROQ.COM")), aiproxy.ENOTFOUND)
}

// ignoreProviderID leaves out row ids, and the key states and version of
// migration 0008, which TestKeyStates pins down.
var ignoreProviderID = cmp.FilterPath(func(p cmp.Path) bool {
	switch p.Last().String() {
	case ".ID", ".KeyStates", ".Version":
		return true
	}
	return false
}, cmp.Ignore())

func TestAddProviderKey_InjectUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	inject := func() bool {
		t.Helper()
		p, err := d.ProviderByHost(ctx, "local:11434")
		if err != nil {
			t.Fatal(err)
		}
		return p.InjectUsage
	}
	add := func(secret string, v *bool) {
		t.Helper()
		if err := d.AddProviderKey(ctx, store.ProviderKey{Host: "local:11434", BaseURL: "http://local:11434", InjectUsage: v, Secret: secret, KeyHash: keys.Hash(secret), KeyHint: keys.Hint(secret)}, t0); err != nil {
			t.Fatal(err)
		}
	}
	add("k1", ptr(false))
	if inject() {
		t.Errorf("InjectUsage after adding with false = true, want false")
	}
	add("k2", nil)
	if inject() {
		t.Errorf("InjectUsage after adding with nil = true, want it kept false")
	}
	add("k3", ptr(true))
	if !inject() {
		t.Errorf("InjectUsage after adding with true = false, want true")
	}
	if err := d.SetProviderInjectUsage(ctx, "local:11434", false); err != nil {
		t.Fatal(err)
	}
	if inject() {
		t.Errorf("InjectUsage after SetProviderInjectUsage(false) = true")
	}
	wantCode(t, "SetProviderInjectUsage(unknown)", d.SetProviderInjectUsage(ctx, "nope", true), aiproxy.ENOTFOUND)
}

func TestRemoveProviderKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	for _, k := range []string{"key-a", "key-b"} {
		if err := addKey(t, d, "api.groq.com", "https://api.groq.com/openai", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := addKey(t, d, "api.openai.com", "https://api.openai.com", "key-a"); err != nil {
		t.Fatal(err)
	}

	wantCode(t, "RemoveProviderKey(unknown host)", d.RemoveProviderKey(ctx, "nope.example", keys.Hash("key-a")), aiproxy.ENOTFOUND)
	wantCode(t, "RemoveProviderKey(unknown key)", d.RemoveProviderKey(ctx, "api.groq.com", keys.Hash("key-z")), aiproxy.ENOTFOUND)

	if err := d.RemoveProviderKey(ctx, "api.groq.com", keys.Hash("key-a")); err != nil {
		t.Fatalf("RemoveProviderKey(key-a) error = %v", err)
	}
	p, err := d.ProviderByHost(ctx, "api.groq.com")
	if err != nil {
		t.Fatalf("host after removing one of two keys: %v, want it kept", err)
	}
	if diff := cmp.Diff([]string{"key-b"}, p.Keys); diff != "" {
		t.Errorf("keys after removing key-a mismatch (-want +got):\n%s", diff)
	}
	// The same key of another host is untouched.
	if p, _ := d.ProviderByHost(ctx, "api.openai.com"); len(p.Keys) != 1 {
		t.Errorf("api.openai.com keys = %d after removing groq's key-a, want 1", len(p.Keys))
	}
	wantCode(t, "RemoveProviderKey(key-a) again", d.RemoveProviderKey(ctx, "api.groq.com", keys.Hash("key-a")), aiproxy.ENOTFOUND)

	// Removing the last key removes the host.
	if err := d.RemoveProviderKey(ctx, "api.groq.com", keys.Hash("key-b")); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "ProviderByHost(after last key removed)", errOf(d.ProviderByHost(ctx, "api.groq.com")), aiproxy.ENOTFOUND)
	list, _ := d.ListProviders(ctx)
	if len(list) != 1 || list[0].Host != "api.openai.com" {
		t.Errorf("ListProviders() = %+v, want api.openai.com alone", list)
	}
	// The host can then come back with another URL.
	if err := addKey(t, d, "api.groq.com", "https://api.groq.com/v2", "key-a"); err != nil {
		t.Errorf("AddProviderKey(re-added host, new URL) error = %v", err)
	}
}

func TestRemoveProvider(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	for _, k := range []string{"key-a", "key-b"} {
		if err := addKey(t, d, "api.groq.com", "https://api.groq.com/openai", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.RemoveProvider(ctx, "api.groq.com"); err != nil {
		t.Fatalf("RemoveProvider() error = %v", err)
	}
	wantCode(t, "RemoveProvider(again)", d.RemoveProvider(ctx, "api.groq.com"), aiproxy.ENOTFOUND)
	wantCode(t, "ProviderByHost(removed)", errOf(d.ProviderByHost(ctx, "api.groq.com")), aiproxy.ENOTFOUND)

	// Its keys went with it (foreign keys are on): no orphan rows, and the
	// same key can be added again to a new host of that name.
	var orphans int
	if err := openRaw(t, d.Path()).QueryRowContext(ctx, "SELECT COUNT(*) FROM provider_keys").Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("provider_keys has %d rows after RemoveProvider, want 0", orphans)
	}
	if err := addKey(t, d, "api.groq.com", "https://api.groq.com/openai", "key-a"); err != nil {
		t.Errorf("AddProviderKey(after RemoveProvider) error = %v", err)
	}
}

// TestListProviders_NoSecrets checks that listings never carry a provider
// key: not in the struct, not in its JSON form, not in %+v.
func TestListProviders_NoSecrets(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := newTestStore(t)
	secrets := []string{"sk-proj-SECRETSECRETSECRET0001", "sk-proj-SECRETSECRETSECRET0002", "gsk_SECRETSECRETSECRET0003"}
	for i, s := range secrets {
		host := "api.openai.com"
		if i == 2 {
			host = "api.groq.com"
		}
		if err := addKey(t, d, host, "https://"+host, s); err != nil {
			t.Fatal(err)
		}
	}
	list, err := d.ListProviders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b) + fmt.Sprintf("%+v", list)
	for _, p := range list {
		if p.Keys != nil {
			t.Errorf("ListProviders() %s has Keys %d entries, want none", p.Host, len(p.Keys))
		}
	}
	for _, s := range secrets {
		if strings.Contains(text, s) || strings.Contains(text, "SECRETSECRET") || strings.Contains(text, keys.Hash(s)) {
			t.Errorf("ListProviders() output contains key material of %s:\n%s", keys.Hint(s), text)
		}
	}
	var shape []map[string]any
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	for _, m := range shape {
		var fields []string
		for k := range m {
			fields = append(fields, k)
		}
		if diff := cmp.Diff([]string{"alias", "api_root", "auth", "base_url", "headers", "host", "inject_usage", "key_hints", "key_states", "keys"}, fields, sortStrings); diff != "" {
			t.Errorf("provider JSON fields mismatch (-want +got):\n%s", diff)
		}
	}
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// Key states: RestKey marks a key resting or rejected, not a touch; any
// add, set or remove for the host (a touch) makes every key ok again.
func TestKeyStates_RestAndTouch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newTestStore(t)
	for _, k := range []string{"sk-state-key-a-0001", "sk-state-key-b-0002"} {
		if err := addKey(t, db, "s.example", "https://s.example", k); err != nil {
			t.Fatal(err)
		}
	}
	get := func() aiproxy.Provider {
		p, err := db.ProviderByHost(ctx, "s.example")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := get()
	v := p.Version
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := db.RestKey(ctx, p.KeyStates[0].ID, v, until); err != nil {
		t.Fatal(err)
	}
	if err := db.RestKey(ctx, p.KeyStates[1].ID, v, time.Time{}); err != nil {
		t.Fatal(err)
	}
	p = get()
	if s := p.KeyStates; s[0].State != "resting" || s[0].Until == nil || !s[0].Until.Equal(until) || s[1].State != "rejected" || p.Version != v {
		t.Errorf("after RestKey: %+v version %d (was %d)", s, p.Version, v)
	}
	if err := db.SetProviderInjectUsage(ctx, "s.example", false); err != nil {
		t.Fatal(err)
	}
	p = get()
	if s := p.KeyStates; s[0].State != "ok" || s[0].Until != nil || s[1].State != "ok" || p.Version == v {
		t.Errorf("after a touch: %+v version %d", s, p.Version)
	}
	// A refusal seen before the touch, written after it, does not undo it.
	if err := db.RestKey(ctx, p.KeyStates[1].ID, v, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if s := get().KeyStates; s[1].State != "ok" {
		t.Errorf("a stale refusal undid the touch: %+v", s)
	}
}
