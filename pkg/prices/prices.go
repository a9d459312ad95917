// Package prices knows what a model costs: a built-in, dated table for the
// common models of the major providers (builtin.go), merged with the prices
// an admin stored with `aiproxy price set`, which win. The proxy asks it for
// every request, so Lookup reads an immutable snapshot without locking or
// allocating; Sync replaces the snapshot when the stored prices change.
package prices

import (
	"context"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// Table is the prices in force: the built-in table with the stored
// overrides on top. Its methods are safe for concurrent use.
type Table struct {
	db   *store.DB // nil: the built-in prices only
	snap atomic.Pointer[snapshot]
	mu   sync.Mutex // one reload at a time
}

// snapshot is one immutable state of the table.
type snapshot struct {
	version int64 // the auth_version the overrides were read at
	prices  map[string]aiproxy.Price
}

// Load returns the table of db's prices: the built-in ones and the stored
// overrides, read now.
func Load(ctx context.Context, db *store.DB) (*Table, error) {
	t := &Table{db: db}
	if err := t.Reload(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// Builtin returns a table of the built-in prices alone, never reloaded.
func Builtin() *Table {
	t := &Table{}
	t.snap.Store(&snapshot{prices: merge(nil)})
	return t
}

// Lookup returns the price of model, the name sent upstream: the price
// stored or built in under exactly that name, else, for a dated snapshot
// or a moving alias, the price of the model it belongs to (see Base). It
// reads the current snapshot and neither locks nor allocates. The returned
// Price's CachedInput points into the snapshot: read it, never write it.
func (t *Table) Lookup(model string) (aiproxy.Price, bool) {
	m := t.snap.Load().prices
	if p, ok := m[model]; ok {
		return p, true
	}
	if base, ok := Base(model); ok {
		if p, ok := m[base]; ok {
			return p, true
		}
	}
	return aiproxy.Price{}, false
}

// Stale reports whether the stored prices may have changed since the
// table last read them: the store's auth_version, as the last user lookup
// read it (store.DB.AuthVersion, no query), differs from the one the
// table was read at. Users and providers move that counter too, so a
// stale table is sometimes only reloaded to find the same prices.
func (t *Table) Stale() bool {
	return t.db != nil && t.db.AuthVersion() != t.snap.Load().version
}

// Sync reloads the table when it is Stale. The proxy calls it once per
// request, after the user's key was looked up (which reads the counter
// that Stale compares), so that a `price set` made by another process
// counts from the next request on. Without a change it costs a mutex and
// two loads; a failed reload keeps the current prices and returns the
// error.
func (t *Table) Sync(ctx context.Context) error {
	if !t.Stale() {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.Stale() {
		return nil // another request reloaded it while this one waited
	}
	return t.reload(ctx)
}

// Reload reads the stored prices now, whatever the counter says.
func (t *Table) Reload(ctx context.Context) error {
	if t.db == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reload(ctx)
}

// reload is Reload with t.mu held.
func (t *Table) reload(ctx context.Context) error {
	v, overrides, err := t.db.PricesVersion(ctx)
	if err != nil {
		return err
	}
	t.snap.Store(&snapshot{version: v, prices: merge(overrides)})
	return nil
}

// List returns every price in force, by model: the built-in ones
// (BuiltIn set) and the stored ones, which replace built-in ones of the
// same name.
func (t *Table) List() []aiproxy.Price {
	m := t.snap.Load().prices
	out := make([]aiproxy.Price, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out
}

// merge returns the built-in prices with overrides on top.
func merge(overrides []aiproxy.Price) map[string]aiproxy.Price {
	m := make(map[string]aiproxy.Price, len(builtin)+len(overrides))
	for name, r := range builtin {
		m[name] = r.price(name)
	}
	for _, p := range overrides {
		p.BuiltIn = false
		m[p.Model] = p
	}
	return m
}

// BuiltinPrice returns the built-in price of exactly model, if there is one.
func BuiltinPrice(model string) (aiproxy.Price, bool) {
	r, ok := builtin[model]
	if !ok {
		return aiproxy.Price{}, false
	}
	return r.price(model), true
}

// Base returns the model that a dated snapshot or moving alias belongs
// to, by removing one trailing suffix, and reports whether model had one:
//
//	-YYYY-MM-DD   gpt-4o-2024-08-06          → gpt-4o          (OpenAI)
//	-YYYYMMDD     claude-sonnet-4-20250514   → claude-sonnet-4 (Anthropic)
//	-NNNN         gpt-3.5-turbo-0125, mistral-small-2506        (MMDD, YYMM)
//	-NNN          gemini-2.0-flash-001       → gemini-2.0-flash (Gemini versions)
//	-latest       claude-3-5-haiku-latest    → claude-3-5-haiku
//
// Only one suffix is removed, and only whole dash-separated digit groups
// of those lengths count, so llama-3.1-8b-instant or qwen3-32b have none.
// Lookup tries the exact name first: a snapshot priced apart from its
// alias (gpt-4o-2024-05-13) is listed under its own name. The result is a
// substring of model: no allocation.
func Base(model string) (string, bool) {
	if base, ok := strings.CutSuffix(model, "-latest"); ok && base != "" {
		return base, true
	}
	n := len(model)
	// -YYYY-MM-DD: 11 bytes.
	if n > 11 && model[n-11] == '-' && digits(model[n-10:n-6]) && model[n-6] == '-' &&
		digits(model[n-5:n-3]) && model[n-3] == '-' && digits(model[n-2:]) {
		return model[:n-11], true
	}
	i := strings.LastIndexByte(model, '-')
	if i <= 0 {
		return "", false
	}
	switch suffix := model[i+1:]; len(suffix) {
	case 3, 4, 8:
		if digits(suffix) {
			return model[:i], true
		}
	}
	return "", false
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
