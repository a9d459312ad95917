package admin_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
	"github.com/aiproxy/aiproxy/pkg/storetest"
)

var t0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// keySource hands out valid, predictable keys: sk-cfw + 45 digits.
type keySource struct {
	mu   sync.Mutex
	n    int
	made []string
}

func (k *keySource) New() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.n++
	key := fmt.Sprintf("%s%045d", keys.Prefix, k.n)
	k.made = append(k.made, key)
	return key
}

type fixture struct {
	svc   *admin.Service
	db    *store.DB
	clock *clock
	keys  *keySource
}

// newService returns a Service over a fresh database file, with a fixed
// clock at t0 and a predictable key source.
func newService(t *testing.T) fixture {
	t.Helper()
	db, err := store.Open(t.Context(), storetest.NewFile(t))
	if err != nil {
		t.Fatalf("store.Open() error = %v", err)
	}
	t.Cleanup(func() { db.Close() })
	f := fixture{svc: admin.New(db), db: db, clock: &clock{t: t0}, keys: &keySource{}}
	f.svc.Now = f.clock.Now
	f.svc.NewKey = f.keys.New
	return f
}

func (f fixture) createUser(t *testing.T, name string, exp admin.Expiry) string {
	t.Helper()
	k, err := f.svc.CreateUser(t.Context(), name, exp)
	if err != nil {
		t.Fatalf("CreateUser(%q) error = %v", name, err)
	}
	return k
}

func at(t time.Time) admin.Expiry { return admin.Expiry{Set: true, At: &t} }

var never = admin.Expiry{Set: true}

func wantCode(t *testing.T, op string, err error, code string) {
	t.Helper()
	if got := aiproxy.ErrorCode(err); got != code {
		t.Errorf("%s error = %v (code %q), want %s", op, err, got, code)
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestExpiryFrom(t *testing.T) {
	t.Parallel()
	f := newService(t)
	tests := []struct {
		in   string
		want admin.Expiry
	}{
		{"", admin.Expiry{}},
		{"30d", at(t0.Add(30 * 24 * time.Hour))},
		{"2026-12-31", at(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))},
		{"2027-01-31T10:00:00+02:00", at(time.Date(2027, 1, 31, 8, 0, 0, 0, time.UTC))},
	}
	for _, tc := range tests {
		got, err := f.svc.ExpiryFrom(tc.in)
		if err != nil {
			t.Errorf("ExpiryFrom(%q) error = %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ExpiryFrom(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
	}
	for _, in := range []string{"30y", "-1d", " ", "tomorrow"} {
		wantCode(t, fmt.Sprintf("ExpiryFrom(%q)", in), errOf(f.svc.ExpiryFrom(in)), aiproxy.EINVALID)
	}
}

func TestService_CreateUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	exp := t0.Add(30 * 24 * time.Hour)
	k := f.createUser(t, "alice", at(exp))
	if !keys.Valid(k) || k != f.keys.made[0] {
		t.Errorf("CreateUser() key = %q, want the key source's valid key %q", k, f.keys.made[0])
	}
	u, err := f.svc.Authenticate(ctx, k)
	if err != nil {
		t.Fatalf("Authenticate(new key) error = %v", err)
	}
	want := aiproxy.User{ID: u.ID, Name: "alice", KeyHint: keys.Hint(k), CreatedAt: t0, ExpiresAt: &exp}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("Authenticate(new key) mismatch (-want +got):\n%s", diff)
	}
	// The store keeps the hash, so the hash authenticates too.
	if su, err := f.db.UserByKeyHash(ctx, keys.Hash(k)); err != nil || su.Name != "alice" {
		t.Errorf("UserByKeyHash(Hash(key)) = %+v, %v; want alice", su, err)
	}
	// The default key source makes real keys.
	real := admin.New(f.db)
	rk, err := real.CreateUser(ctx, "bob", admin.Expiry{})
	if err != nil || !keys.Valid(rk) {
		t.Errorf("CreateUser() with the default key source = %q, %v; want a valid key", rk, err)
	}

	tests := []struct {
		name string
		user string
		exp  admin.Expiry
		code string
	}{
		{"duplicate", "alice", admin.Expiry{}, aiproxy.ECONFLICT},
		{"empty name", "", admin.Expiry{}, aiproxy.EINVALID},
		{"bad name", "a/b", admin.Expiry{}, aiproxy.EINVALID},
		{"expiry in the past", "carol", at(t0.Add(-time.Second)), aiproxy.EINVALID},
		{"expiry exactly now", "carol", at(t0), aiproxy.EINVALID},
	}
	for _, tc := range tests {
		wantCode(t, fmt.Sprintf("CreateUser(%s)", tc.name), errOf(f.svc.CreateUser(ctx, tc.user, tc.exp)), tc.code)
	}
	if _, err := f.db.UserByName(ctx, "carol"); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Errorf("carol exists after refused creations (err %v)", err)
	}
}

func TestService_Authenticate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	exp := t0.Add(time.Hour)
	live := f.createUser(t, "live", admin.Expiry{})
	expiring := f.createUser(t, "expiring", at(exp))
	deleted := f.createUser(t, "deleted", admin.Expiry{})
	if err := f.svc.DeleteUser(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	resetOld := f.createUser(t, "reset", admin.Expiry{})
	resetNew, err := f.svc.ResetUser(ctx, "reset", admin.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	unknown := keys.New()

	tests := []struct {
		name string
		key  string
		now  time.Time
		user string // "" when an error is expected
		code string
	}{
		{"live", live, t0, "live", ""},
		{"malformed: empty", "", t0, "", aiproxy.EUNAUTHORIZED},
		{"malformed: Bearer prefix", "Bearer " + live, t0, "", aiproxy.EUNAUTHORIZED},
		{"malformed: trailing newline", live + "\n", t0, "", aiproxy.EUNAUTHORIZED},
		{"malformed: truncated", live[:len(live)-1], t0, "", aiproxy.EUNAUTHORIZED},
		{"malformed: provider-style key", "sk-proj-abc", t0, "", aiproxy.EUNAUTHORIZED},
		{"unknown", unknown, t0, "", aiproxy.EUNAUTHORIZED},
		{"deleted user", deleted, t0, "", aiproxy.EUNAUTHORIZED},
		{"old key after reset", resetOld, t0, "", aiproxy.EUNAUTHORIZED},
		{"new key after reset", resetNew, t0, "reset", ""},
		{"not yet expired", expiring, exp.Add(-time.Millisecond), "expiring", ""},
		{"expires exactly now", expiring, exp, "", aiproxy.EEXPIRED},
		{"expired", expiring, exp.Add(24 * time.Hour), "", aiproxy.EEXPIRED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share the clock.
			f.clock.Set(tc.now)
			u, err := f.svc.Authenticate(ctx, tc.key)
			wantCode(t, "Authenticate()", err, tc.code)
			if u.Name != tc.user {
				t.Errorf("Authenticate() user = %q, want %q", u.Name, tc.user)
			}
			if tc.code == aiproxy.EEXPIRED && !strings.Contains(aiproxy.ErrorMessage(err), exp.Format(time.RFC3339)) {
				t.Errorf("Authenticate(expired) message = %q, want it to say when: %s", aiproxy.ErrorMessage(err), exp.Format(time.RFC3339))
			}
			if err != nil && strings.Contains(err.Error(), tc.key) && tc.key != "" {
				t.Errorf("Authenticate() error %q echoes the key", err)
			}
		})
	}
}

func TestService_ResetUser(t *testing.T) {
	t.Parallel()
	exp := t0.Add(24 * time.Hour)
	later := t0.Add(7 * 24 * time.Hour)
	tests := []struct {
		name string
		exp  admin.Expiry
		want *time.Time
	}{
		{"without expiry keeps it", admin.Expiry{}, &exp},
		{"with expiry sets it", at(later), &later},
		{"never clears it", never, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			f := newService(t)
			old := f.createUser(t, "alice", at(exp))
			nk, err := f.svc.ResetUser(ctx, "alice", tc.exp)
			if err != nil {
				t.Fatalf("ResetUser() error = %v", err)
			}
			if nk == old || !keys.Valid(nk) {
				t.Errorf("ResetUser() key = %q, want a new valid key", nk)
			}
			wantCode(t, "Authenticate(old key)", errOf(f.svc.Authenticate(ctx, old)), aiproxy.EUNAUTHORIZED)
			u, err := f.svc.Authenticate(ctx, nk)
			if err != nil {
				t.Fatalf("Authenticate(new key) error = %v", err)
			}
			if diff := cmp.Diff(tc.want, u.ExpiresAt); diff != "" {
				t.Errorf("ExpiresAt after ResetUser mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		f := newService(t)
		old := f.createUser(t, "alice", admin.Expiry{})
		wantCode(t, "ResetUser(missing)", errOf(f.svc.ResetUser(ctx, "nobody", admin.Expiry{})), aiproxy.ENOTFOUND)
		wantCode(t, "ResetUser(bad name)", errOf(f.svc.ResetUser(ctx, "a b", admin.Expiry{})), aiproxy.EINVALID)
		wantCode(t, "ResetUser(past expiry)", errOf(f.svc.ResetUser(ctx, "alice", at(t0.Add(-time.Hour)))), aiproxy.EINVALID)
		// A refused reset leaves the old key working.
		if _, err := f.svc.Authenticate(ctx, old); err != nil {
			t.Errorf("Authenticate(old key) after refused resets error = %v", err)
		}
	})
	t.Run("revives an expired user", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		f := newService(t)
		f.createUser(t, "alice", at(exp))
		f.clock.Set(exp.Add(time.Hour))
		nk, err := f.svc.ResetUser(ctx, "alice", at(exp.Add(48*time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Authenticate(ctx, nk); err != nil {
			t.Errorf("Authenticate(revived key) error = %v", err)
		}
	})
}

func TestService_SetUserExpiry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	k := f.createUser(t, "alice", admin.Expiry{})
	exp := t0.Add(time.Hour)
	if err := f.svc.SetUserExpiry(ctx, "alice", at(exp)); err != nil {
		t.Fatalf("SetUserExpiry(+1h) error = %v", err)
	}
	f.clock.Set(exp)
	wantCode(t, "Authenticate(after expiry)", errOf(f.svc.Authenticate(ctx, k)), aiproxy.EEXPIRED)
	if err := f.svc.SetUserExpiry(ctx, "alice", never); err != nil {
		t.Fatalf("SetUserExpiry(never) error = %v", err)
	}
	u, err := f.svc.Authenticate(ctx, k)
	if err != nil || u.ExpiresAt != nil {
		t.Errorf("Authenticate() after SetUserExpiry(never) = %+v, %v; want no expiry", u, err)
	}
	wantCode(t, "SetUserExpiry(past)", f.svc.SetUserExpiry(ctx, "alice", at(exp.Add(-time.Minute))), aiproxy.EINVALID)
	wantCode(t, "SetUserExpiry(missing)", f.svc.SetUserExpiry(ctx, "nobody", never), aiproxy.ENOTFOUND)
	wantCode(t, "SetUserExpiry(bad name)", f.svc.SetUserExpiry(ctx, "", never), aiproxy.EINVALID)

	// An unset Expiry changes nothing: the expiry stays.
	later := exp.Add(time.Hour)
	if err := f.svc.SetUserExpiry(ctx, "alice", at(later)); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetUserExpiry(ctx, "alice", admin.Expiry{}); err != nil {
		t.Fatalf("SetUserExpiry(unset) error = %v", err)
	}
	if u, err := f.svc.Authenticate(ctx, k); err != nil || u.ExpiresAt == nil || !u.ExpiresAt.Equal(later) {
		t.Errorf("after SetUserExpiry(unset): %+v, %v; want the expiry %v kept", u, err, later)
	}
	wantCode(t, "SetUserExpiry(missing, unset)", f.svc.SetUserExpiry(ctx, "nobody", admin.Expiry{}), aiproxy.ENOTFOUND)
}

func TestService_DeleteUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	k := f.createUser(t, "alice", admin.Expiry{})
	if err := f.svc.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "Authenticate(deleted)", errOf(f.svc.Authenticate(ctx, k)), aiproxy.EUNAUTHORIZED)
	wantCode(t, "DeleteUser(again)", f.svc.DeleteUser(ctx, "alice"), aiproxy.ENOTFOUND)
	wantCode(t, "DeleteUser(bad name)", f.svc.DeleteUser(ctx, "../x"), aiproxy.EINVALID)
}

func TestService_AddProviderKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	add := func(host, key, baseURL string) error {
		return f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: host, Key: key, BaseURL: baseURL})
	}
	if err := add("API.Groq.COM.", "gsk_one\n", ""); err != nil {
		t.Fatalf("AddProviderKey(new host, no URL) error = %v", err)
	}
	if err := add("localhost:11434", "ollama", "http://LOCALHOST:11434/v1/"); err != nil {
		t.Fatalf("AddProviderKey(new host with URL) error = %v", err)
	}
	// A known host keeps its URL when none is given, and accepts the same
	// URL written differently.
	if err := add("localhost:11434", "ollama2", ""); err != nil {
		t.Errorf("AddProviderKey(known host, no URL) error = %v", err)
	}
	if err := add("LOCALHOST:11434", "ollama3", "http://localhost:11434/v1"); err != nil {
		t.Errorf("AddProviderKey(known host, same URL) error = %v", err)
	}

	got, err := f.svc.ListProviders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []aiproxy.Provider{
		{Host: "api.groq.com", BaseURL: "https://api.groq.com", KeyCount: 1, KeyHints: []string{keys.Hint("gsk_one")}, InjectUsage: true,
			APIRoot: "/openai/v1", Auth: "bearer", Headers: map[string]string{}},
		{Host: "localhost:11434", BaseURL: "http://localhost:11434/v1", KeyCount: 3,
			KeyHints: []string{keys.Hint("ollama"), keys.Hint("ollama2"), keys.Hint("ollama3")}, InjectUsage: true,
			APIRoot: "/v1", Auth: "bearer", Headers: map[string]string{}},
	}
	// Key states and versions are pkg/store's TestKeyStates_RestAndTouch.
	ignoreID := cmp.FilterPath(func(p cmp.Path) bool {
		s := p.Last().String()
		return s == ".ID" || s == ".KeyStates" || s == ".Version"
	}, cmp.Ignore())
	if diff := cmp.Diff(want, got, ignoreID); diff != "" {
		t.Errorf("ListProviders() mismatch (-want +got):\n%s", diff)
	}
	// The key read with its newline is stored without it.
	p, err := f.svc.Provider(ctx, "api.groq.com.")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"gsk_one"}, p.Keys); diff != "" {
		t.Errorf("Provider().Keys mismatch (-want +got):\n%s", diff)
	}

	tests := []struct {
		name, host, key, url, code string
	}{
		{"same key again", "api.groq.com", "gsk_one", "", aiproxy.ECONFLICT},
		{"same key, other case host", "API.GROQ.COM", "gsk_one", "", aiproxy.ECONFLICT},
		{"different base URL", "api.groq.com", "gsk_two", "https://api.groq.com/openai", aiproxy.ECONFLICT},
		{"bad host: scheme", "https://api.groq.com", "k", "", aiproxy.EINVALID},
		{"bad host: path", "api.groq.com/v1", "k", "", aiproxy.EINVALID},
		{"empty key", "api.groq.com", "", "", aiproxy.EINVALID},
		{"blank key", "api.groq.com", " \n", "", aiproxy.EINVALID},
		{"key with inner space", "api.groq.com", "gsk one", "", aiproxy.EINVALID},
		{"key with control byte", "api.groq.com", "gsk\x00one", "", aiproxy.EINVALID},
		{"key too long", "api.groq.com", strings.Repeat("k", 1025), "", aiproxy.EINVALID},
		{"bad base URL: scheme", "new.example", "k", "ftp://new.example", aiproxy.EINVALID},
		{"bad base URL: userinfo", "new.example", "k", "https://u:p@new.example", aiproxy.EINVALID},
	}
	for _, tc := range tests {
		err := add(tc.host, tc.key, tc.url)
		wantCode(t, fmt.Sprintf("AddProviderKey(%s)", tc.name), err, tc.code)
		if err != nil && len(tc.key) > 3 && strings.Contains(err.Error(), strings.TrimSpace(tc.key)) {
			t.Errorf("AddProviderKey(%s) error %q contains the key", tc.name, err)
		}
	}
	if _, err := f.svc.Provider(ctx, "new.example"); aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		t.Errorf("Provider(new.example) after refused adds error = %v, want ENOTFOUND", err)
	}
}

func TestService_InjectUsage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	off := false
	if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "x.example", Key: "k1", InjectUsage: &off}); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.svc.Provider(ctx, "x.example"); p.InjectUsage {
		t.Errorf("InjectUsage = true, want false as added")
	}
	if err := f.svc.SetProviderInjectUsage(ctx, "X.EXAMPLE.", true); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.svc.Provider(ctx, "x.example"); !p.InjectUsage {
		t.Errorf("InjectUsage = false after SetProviderInjectUsage(true)")
	}
	wantCode(t, "SetProviderInjectUsage(unknown)", f.svc.SetProviderInjectUsage(ctx, "y.example", true), aiproxy.ENOTFOUND)
	wantCode(t, "SetProviderInjectUsage(bad host)", f.svc.SetProviderInjectUsage(ctx, "y/x", true), aiproxy.EINVALID)
}

func TestService_RemoveProvider(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	for _, k := range []string{"key-a", "key-b"} {
		if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.groq.com", Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.openai.com", Key: "sk-x"}); err != nil {
		t.Fatal(err)
	}

	wantCode(t, "RemoveProvider(unknown key)", f.svc.RemoveProvider(ctx, "api.groq.com", "key-z"), aiproxy.ENOTFOUND)
	wantCode(t, "RemoveProvider(unknown host)", f.svc.RemoveProvider(ctx, "nope.example", ""), aiproxy.ENOTFOUND)
	wantCode(t, "RemoveProvider(bad host)", f.svc.RemoveProvider(ctx, "http://api.groq.com", ""), aiproxy.EINVALID)
	wantCode(t, "RemoveProvider(bad key)", f.svc.RemoveProvider(ctx, "api.groq.com", "a b"), aiproxy.EINVALID)

	// One key, named as read from stdin, with the host in another case.
	if err := f.svc.RemoveProvider(ctx, "API.Groq.com.", "key-a\n"); err != nil {
		t.Fatalf("RemoveProvider(host, key-a) error = %v", err)
	}
	p, err := f.svc.Provider(ctx, "api.groq.com")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"key-b"}, p.Keys); diff != "" {
		t.Errorf("keys after removing key-a mismatch (-want +got):\n%s", diff)
	}
	// The whole host.
	if err := f.svc.RemoveProvider(ctx, "api.groq.com", ""); err != nil {
		t.Fatalf("RemoveProvider(host) error = %v", err)
	}
	wantCode(t, "Provider(removed host)", errOf(f.svc.Provider(ctx, "api.groq.com")), aiproxy.ENOTFOUND)
	// Removing the last key of a host removes the host.
	if err := f.svc.RemoveProvider(ctx, "api.openai.com", "sk-x"); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.svc.ListProviders(ctx); len(list) != 0 {
		t.Errorf("ListProviders() = %+v, want none", list)
	}
	// A removed host comes back with the default URL.
	if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.openai.com", Key: "sk-y"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.svc.Provider(ctx, "api.openai.com"); p.BaseURL != "https://api.openai.com" {
		t.Errorf("re-added host base URL = %q, want https://api.openai.com", p.BaseURL)
	}
}

func TestService_MeAndResetOwnKey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	exp := t0.Add(24 * time.Hour)
	k := f.createUser(t, "alice", at(exp))
	other := f.createUser(t, "bob", admin.Expiry{})
	alice, _ := f.svc.Authenticate(ctx, k)
	bob, _ := f.svc.Authenticate(ctx, other)
	n := func(v int64) *int64 { return &v }
	if err := f.svc.RecordUsage(ctx, []aiproxy.Usage{
		{Time: t0, UserID: alice.ID, UserName: "alice", Provider: "p", Path: "/v1/x", Status: 200, PromptTokens: n(3), CompletionTokens: n(4), TotalTokens: n(7)},
		{Time: t0, UserID: alice.ID, UserName: "alice", Provider: "p", Path: "/v1/x", Status: 500},
		{Time: t0, UserID: bob.ID, UserName: "bob", Provider: "p", Path: "/v1/x", Status: 200, TotalTokens: n(100)},
	}); err != nil {
		t.Fatal(err)
	}

	me, err := f.svc.Me(ctx, k)
	if err != nil {
		t.Fatalf("Me() error = %v", err)
	}
	want := admin.Me{Name: "alice", KeyHint: keys.Hint(k), ExpiresAt: &exp,
		Usage:  aiproxy.UsageTotals{Requests: 2, PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7},
		Limits: aiproxy.LimitsView{Default: true}} // no limits anywhere
	if diff := cmp.Diff(want, me); diff != "" {
		t.Errorf("Me() mismatch (-want +got):\n%s", diff)
	}
	b, _ := json.Marshal(me)
	if strings.Contains(string(b), k) || strings.Contains(string(b), keys.Hash(k)) {
		t.Errorf("Me() JSON %s contains the key", b)
	}
	wantCode(t, "Me(malformed)", errOf(f.svc.Me(ctx, "nope")), aiproxy.EUNAUTHORIZED)

	name, nk, err := f.svc.ResetOwnKey(ctx, k)
	if err != nil {
		t.Fatalf("ResetOwnKey() error = %v", err)
	}
	if name != "alice" || !keys.Valid(nk) || nk == k {
		t.Errorf("ResetOwnKey() = %q, %q; want alice and a new valid key", name, nk)
	}
	wantCode(t, "Authenticate(old key after self-reset)", errOf(f.svc.Authenticate(ctx, k)), aiproxy.EUNAUTHORIZED)
	wantCode(t, "ResetOwnKey(old key again)", errOf3(f.svc.ResetOwnKey(ctx, k)), aiproxy.EUNAUTHORIZED)
	me2, err := f.svc.Me(ctx, nk)
	if err != nil {
		t.Fatalf("Me(new key) error = %v", err)
	}
	// Expiry and usage survive a self-reset; only the key changed.
	want.KeyHint = keys.Hint(nk)
	if diff := cmp.Diff(want, me2); diff != "" {
		t.Errorf("Me(new key) mismatch (-want +got):\n%s", diff)
	}
	if _, err := f.svc.Authenticate(ctx, other); err != nil {
		t.Errorf("bob's key after alice's self-reset: %v", err)
	}

	// An expired key cannot reset itself: only the admin can revive it.
	f.clock.Set(exp)
	_, _, err = f.svc.ResetOwnKey(ctx, nk)
	wantCode(t, "ResetOwnKey(expired)", err, aiproxy.EEXPIRED)
	wantCode(t, "Me(expired)", errOf(f.svc.Me(ctx, nk)), aiproxy.EEXPIRED)
	f.clock.Set(t0)
	if _, err := f.svc.Authenticate(ctx, nk); err != nil {
		t.Errorf("the expired key was replaced by a refused self-reset: %v", err)
	}
	wantCode(t, "ResetOwnKey(malformed)", errOf3(f.svc.ResetOwnKey(ctx, "sk-cfw")), aiproxy.EUNAUTHORIZED)
}

func errOf3(_, _ string, err error) error { return err }

// TestService_ResetOwnKey_Concurrent races self-resets with one key
// through the service: one wins and its new key is the only one that works.
func TestService_ResetOwnKey_Concurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	k := f.createUser(t, "alice", admin.Expiry{})
	const n = 10
	newKeys := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, newKeys[i], errs[i] = f.svc.ResetOwnKey(ctx, k) })
	}
	wg.Wait()
	var winners []string
	for i, err := range errs {
		switch aiproxy.ErrorCode(err) {
		case "":
			winners = append(winners, newKeys[i])
		case aiproxy.EUNAUTHORIZED:
		default:
			t.Errorf("ResetOwnKey() #%d error = %v, want nil or EUNAUTHORIZED", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d concurrent ResetOwnKey calls succeeded, want 1", len(winners))
	}
	for _, key := range append(f.keys.made[1:], k) {
		_, err := f.svc.Authenticate(ctx, key)
		if ok := err == nil; ok != (key == winners[0]) {
			t.Errorf("Authenticate(%s) error = %v; want only the winner's key to work", keys.Hint(key), err)
		}
	}
}

func TestService_Stats(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	k := f.createUser(t, "alice", admin.Expiry{})
	u, _ := f.svc.Authenticate(ctx, k)
	var batch []aiproxy.Usage
	for _, ago := range []time.Duration{72 * time.Hour, 36 * time.Hour, time.Hour, time.Minute} {
		batch = append(batch, aiproxy.Usage{Time: t0.Add(-ago), UserID: u.ID, UserName: "alice", Provider: "p", Model: "m", Path: "/v1/x", Status: 200})
	}
	if err := f.svc.RecordUsage(ctx, batch); err != nil {
		t.Fatal(err)
	}
	f.createUser(t, "bob", admin.Expiry{}) // a user without usage
	tests := []struct {
		name string
		q    admin.StatsQuery
		want []int64 // requests per row
	}{
		{"all", admin.StatsQuery{}, []int64{4}},
		{"since 2h", admin.StatsQuery{Since: "2h"}, []int64{2}},
		{"since 2d", admin.StatsQuery{Since: "2d"}, []int64{3}},
		{"since date", admin.StatsQuery{Since: "2026-03-13"}, []int64{3}},
		{"since RFC 3339", admin.StatsQuery{Since: "2026-03-14T11:30:00Z"}, []int64{1}},
		{"by day", admin.StatsQuery{By: "day"}, []int64{1, 1, 2}},
		{"other user", admin.StatsQuery{User: "bob"}, []int64{0}},
	}
	for _, tc := range tests {
		rows, err := f.svc.Stats(ctx, tc.q)
		if err != nil {
			t.Errorf("Stats(%+v) error = %v", tc.q, err)
			continue
		}
		var got []int64
		for _, r := range rows {
			got = append(got, r.Requests)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Stats(%s) requests mismatch (-want +got):\n%s", tc.name, diff)
		}
	}
	for _, q := range []admin.StatsQuery{{Since: "30y"}, {Since: "yesterday"}, {Since: "-1d"}, {By: "week"}} {
		wantCode(t, fmt.Sprintf("Stats(%+v)", q), errOf(f.svc.Stats(ctx, q)), aiproxy.EINVALID)
	}
}

// TestService_ListingsHoldNoKeys runs a set of operations and checks that
// neither listing, in JSON or printed, contains any user key, user key
// hash, or provider key.
func TestService_ListingsHoldNoKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	f.svc.NewKey = keys.New // random keys, so that no digit run matches by chance
	var secrets []string
	for _, name := range []string{"alice", "bob", "carol"} {
		k, err := f.svc.CreateUser(ctx, name, admin.Expiry{})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, k)
	}
	nk, err := f.svc.ResetUser(ctx, "bob", admin.Expiry{})
	if err != nil {
		t.Fatal(err)
	}
	_, own, err := f.svc.ResetOwnKey(ctx, secrets[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DeleteUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, nk, own)
	providerKeys := []string{"sk-proj-PROVIDERSECRET0000000001", "gsk_PROVIDERSECRET0000000002", "PROVIDERSECRET3"}
	for i, pk := range providerKeys {
		host := []string{"api.openai.com", "api.groq.com", "api.groq.com"}[i]
		if err := f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: host, Key: pk}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.RemoveProvider(ctx, "api.groq.com", providerKeys[2]); err != nil {
		t.Fatal(err)
	}

	users, err := f.svc.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	providers, err := f.svc.ListProviders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ub, _ := json.Marshal(users)
	pb, _ := json.Marshal(providers)
	text := string(ub) + string(pb) + fmt.Sprintf("%+v %+v", users, providers)
	for _, s := range secrets {
		body := s[len(keys.Prefix) : len(s)-4]
		if strings.Contains(text, body) || strings.Contains(text, keys.Hash(s)) {
			t.Errorf("listings contain user key %s or its hash:\n%s", keys.Hint(s), text)
		}
	}
	if strings.Contains(text, "PROVIDERSECRET") {
		t.Errorf("listings contain a provider key:\n%s", text)
	}
	for _, p := range providers {
		if len(p.Keys) != 0 {
			t.Errorf("ListProviders() %s carries %d keys, want none", p.Host, len(p.Keys))
		}
	}
	if len(users) != 2 || len(providers) != 2 {
		t.Errorf("listings have %d users and %d providers, want 2 and 2", len(users), len(providers))
	}
}

func TestService_BackupAndPing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	f.createUser(t, "alice", admin.Expiry{})
	if err := f.svc.Ping(ctx); err != nil {
		t.Errorf("Ping() error = %v", err)
	}
	dst := filepath.Join(t.TempDir(), "backup.db")
	if err := f.svc.Backup(ctx, dst); err != nil {
		t.Fatalf("Backup() error = %v", err)
	}
	b, err := store.Open(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.UserByName(ctx, "alice"); err != nil {
		t.Errorf("backup UserByName(alice) error = %v", err)
	}
	wantCode(t, "Backup(existing)", f.svc.Backup(ctx, dst), aiproxy.ECONFLICT)
}

// TestService_Stats_unknownUser checks that stats for a user who neither
// exists nor ever made a request is ENOTFOUND (so a typo is not shown as a
// quiet user), while a deleted user's past requests still show.
func TestService_Stats_unknownUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := newService(t)
	k := f.createUser(t, "carol", admin.Expiry{})
	u, _ := f.svc.Authenticate(ctx, k)
	rec := aiproxy.Usage{Time: t0.Add(-48 * time.Hour), UserID: u.ID, UserName: "carol", Provider: "p", Model: "m", Path: "/v1/x", Status: 200}
	if err := f.svc.RecordUsage(ctx, []aiproxy.Usage{rec}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DeleteUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	f.createUser(t, "dave", admin.Expiry{})

	tests := []struct {
		name     string
		q        admin.StatsQuery
		want     []int64 // requests per row, when no error
		wantCode string
	}{
		{"unknown user", admin.StatsQuery{User: "nobody"}, nil, aiproxy.ENOTFOUND},
		{"unknown user, grouped", admin.StatsQuery{User: "nobody", By: "model"}, nil, aiproxy.ENOTFOUND},
		{"unknown user, since", admin.StatsQuery{User: "nobody", Since: "1h"}, nil, aiproxy.ENOTFOUND},
		{"deleted user with usage", admin.StatsQuery{User: "carol"}, []int64{1}, ""},
		{"deleted user, usage before since", admin.StatsQuery{User: "carol", Since: "1h"}, []int64{0}, ""},
		{"existing user without usage", admin.StatsQuery{User: "dave"}, []int64{0}, ""},
		{"existing user without usage, grouped", admin.StatsQuery{User: "dave", By: "day"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := f.svc.Stats(ctx, tc.q)
			if tc.wantCode != "" {
				wantCode(t, fmt.Sprintf("Stats(%+v)", tc.q), err, tc.wantCode)
				if err != nil && err.Error() != "user not found" {
					t.Errorf("Stats(%+v) error = %q, want %q", tc.q, err, "user not found")
				}
				return
			}
			if err != nil {
				t.Fatalf("Stats(%+v) error = %v", tc.q, err)
			}
			var got []int64
			for _, r := range rows {
				got = append(got, r.Requests)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Stats(%+v) requests (-want +got):\n%s", tc.q, diff)
			}
		})
	}
}
