package prices_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/prices"
	"github.com/aiproxy/aiproxy/pkg/store"
)

func openStore(t *testing.T, path string) *store.DB {
	t.Helper()
	d, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("store.Open(%q) error = %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestBase(t *testing.T) {
	t.Parallel()
	tests := []struct {
		model, base string
		ok          bool
	}{
		{"gpt-4o-2024-08-06", "gpt-4o", true},
		{"claude-sonnet-4-20250514", "claude-sonnet-4", true},
		{"claude-opus-4-1-20250805", "claude-opus-4-1", true},
		{"gpt-3.5-turbo-0125", "gpt-3.5-turbo", true},
		{"mistral-small-2506", "mistral-small", true},
		{"gemini-2.0-flash-001", "gemini-2.0-flash", true},
		{"claude-3-5-haiku-latest", "claude-3-5-haiku", true},
		{"moonshotai/kimi-k2-instruct-0905", "moonshotai/kimi-k2-instruct", true},
		{"gpt-4o", "", false},
		{"llama-3.1-8b-instant", "", false},
		{"qwen/qwen3-32b", "", false},
		{"o3", "", false},
		{"-latest", "", false},
		{"model-12", "", false},    // two digits: not a snapshot
		{"model-12345", "", false}, // five digits: not a snapshot
		{"x-2024-8-06", "", false}, // not YYYY-MM-DD
		{"2024-08-06", "", false},  // nothing before the date
		{"", "", false},
	}
	for _, tc := range tests {
		base, ok := prices.Base(tc.model)
		if base != tc.base || ok != tc.ok {
			t.Errorf("Base(%q) = %q, %v; want %q, %v", tc.model, base, ok, tc.base, tc.ok)
		}
	}
}

func TestBuiltin_LookupExactThenSnapshot(t *testing.T) {
	t.Parallel()
	tab := prices.Builtin()
	tests := []struct {
		model         string
		ok            bool
		input, output float64
		cached        float64 // -1: none
	}{
		{"gpt-4o", true, 2.5, 10, 1.25},
		{"gpt-4o-2024-08-06", true, 2.5, 10, 1.25},
		{"gpt-4o-2024-05-13", true, 5, 15, -1}, // its own row wins over gpt-4o
		{"claude-sonnet-4-5-20250929", true, 3, 15, 0.3},
		{"openai/gpt-oss-120b", true, 0.15, 0.6, 0.075},
		{"deepseek-chat", true, 0.28, 0.42, 0.028},
		{"gemini-2.5-flash", true, 0.3, 2.5, 0.03},
		{"mistral-small-latest", true, 0.1, 0.3, -1},
		{"mistral-large-latest", false, 0, 0, 0}, // a moving alias left unpriced on purpose
		{"my-local-model", false, 0, 0, 0},
	}
	for _, tc := range tests {
		p, ok := tab.Lookup(tc.model)
		if ok != tc.ok {
			t.Errorf("Lookup(%q) ok = %v, want %v", tc.model, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		cached := -1.0
		if p.CachedInput != nil {
			cached = *p.CachedInput
		}
		if p.Input != tc.input || p.Output != tc.output || cached != tc.cached || !p.BuiltIn {
			t.Errorf("Lookup(%q) = %+v (cached %v), want input %v output %v cached %v built-in",
				tc.model, p, cached, tc.input, tc.output, tc.cached)
		}
	}
}

// TestBuiltin_EveryProviderPriced: the table covers the six providers the
// contract names, and every figure is a sane price.
func TestBuiltin_EveryProviderPriced(t *testing.T) {
	t.Parallel()
	tab := prices.Builtin()
	for _, m := range []string{"gpt-5", "claude-haiku-4-5", "gemini-2.5-pro", "llama-3.3-70b-versatile", "codestral", "deepseek-reasoner"} {
		if _, ok := tab.Lookup(m); !ok {
			t.Errorf("Lookup(%q) found no built-in price", m)
		}
	}
	for _, p := range tab.List() {
		if p.Input < 0 || p.Output < 0 || p.Input > 100 || p.Output > 200 ||
			(p.CachedInput != nil && (*p.CachedInput < 0 || *p.CachedInput > p.Input)) {
			t.Errorf("built-in price %+v is out of range", p)
		}
	}
}

func TestTable_LookupDoesNotAllocate(t *testing.T) {
	tab := prices.Builtin()
	for _, m := range []string{"gpt-4o", "gpt-4o-2024-08-06", "claude-3-5-haiku-latest", "unknown-model"} {
		if n := testing.AllocsPerRun(100, func() { tab.Lookup(m) }); n != 0 {
			t.Errorf("Lookup(%q) allocates %v times per call, want 0", m, n)
		}
	}
}

// TestTable_SyncSeesAnotherProcess: serve's table picks up a price set
// through another handle on the same file (the CLI) at its next request,
// an override wins over the built-in price for the alias and its
// snapshots, and removing it restores the built-in one.
func TestTable_SyncSeesAnotherProcess(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	serve, cli := openStore(t, path), openStore(t, path)
	ctx := t.Context()
	tab, err := prices.Load(ctx, serve)
	if err != nil {
		t.Fatal(err)
	}
	request := func() {
		t.Helper()
		serve.UserByKeyHash(ctx, "unknown") // the proxy's auth lookup
		if err := tab.Sync(ctx); err != nil {
			t.Fatalf("Sync() error = %v", err)
		}
	}
	request()
	if tab.Stale() {
		t.Errorf("Stale() = true right after Sync")
	}

	if err := cli.SetPrice(ctx, aiproxy.Price{Model: "gpt-4o", Input: 1, Output: 2}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := cli.SetPrice(ctx, aiproxy.Price{Model: "groq/new-model", Input: 0.5, Output: 0.5}, time.Now()); err != nil {
		t.Fatal(err)
	}
	request()
	for _, m := range []string{"gpt-4o", "gpt-4o-2024-11-20"} {
		if p, ok := tab.Lookup(m); !ok || p.Input != 1 || p.Output != 2 || p.BuiltIn || p.CachedInput != nil {
			t.Errorf("Lookup(%q) after price set = %+v, %v; want the override 1/2", m, p, ok)
		}
	}
	if p, ok := tab.Lookup("groq/new-model"); !ok || p.Input != 0.5 {
		t.Errorf("Lookup(groq/new-model) = %+v, %v; want the added price", p, ok)
	}

	if err := cli.DeletePrice(ctx, "gpt-4o", nil); err != nil {
		t.Fatal(err)
	}
	request()
	if p, ok := tab.Lookup("gpt-4o"); !ok || p.Input != 2.5 || !p.BuiltIn {
		t.Errorf("Lookup(gpt-4o) after remove = %+v, %v; want the built-in price again", p, ok)
	}
}

// TestTable_SyncWithoutChangeReadsNothing: with no change, Sync does not
// reload: a closed database would make a reload fail.
func TestTable_SyncWithoutChangeReadsNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := prices.Load(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := tab.Sync(t.Context()); err != nil {
		t.Errorf("Sync() without a change error = %v, want nil (no query)", err)
	}
	if _, ok := tab.Lookup("gpt-4o"); !ok {
		t.Errorf("Lookup(gpt-4o) after Sync = not found")
	}
}

func BenchmarkTable_Lookup(b *testing.B) {
	tab := prices.Builtin()
	b.ReportAllocs()
	for b.Loop() {
		tab.Lookup("gpt-4o-2024-08-06")
	}
}

// TestTable_ConcurrentLookupAndSync: lookups never see a half-built table
// while another request reloads it (run with -race).
func TestTable_ConcurrentLookupAndSync(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	serve, cli := openStore(t, path), openStore(t, path)
	ctx := t.Context()
	tab, err := prices.Load(ctx, serve)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				serve.UserByKeyHash(ctx, "unknown")
				if err := tab.Sync(ctx); err != nil {
					errs <- err
					return
				}
				if p, ok := tab.Lookup("gpt-4o-2024-08-06"); !ok || (p.Input != 2.5 && p.Input < 100) {
					errs <- fmt.Errorf("Lookup(gpt-4o-2024-08-06) = %+v, %v", p, ok)
					return
				}
			}
		}()
	}
	for i := range 20 {
		if err := cli.SetPrice(ctx, aiproxy.Price{Model: "gpt-4o", Input: float64(100 + i), Output: 1}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	serve.UserByKeyHash(ctx, "unknown")
	if err := tab.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := tab.Lookup("gpt-4o"); p.Input != 119 {
		t.Errorf("Lookup(gpt-4o) after the last set = %+v, want input 119", p)
	}
}

func BenchmarkTable_Sync(b *testing.B) {
	d, err := store.Open(b.Context(), filepath.Join(b.TempDir(), "aiproxy.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	tab, err := prices.Load(b.Context(), d)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tab.Sync(b.Context())
	}
}
