// Package models is the merged model list of GET /v1/models (CONTRACT
// section 6): every provider's own list, fetched from its API root with its
// key in its auth scheme, kept in memory and refreshed in the background,
// the default provider's ids as they are and the others' as ALIAS/MODEL (or
// HOST/MODEL). A provider that is slow, down or answers something that is
// not a model list is left out (and logged); it never delays the answer
// beyond the first-fetch bound nor removes the other providers.
package models

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/httperr"
)

// Defaults of the catalog's timings.
const (
	DefaultInterval     = 5 * time.Minute  // between background refreshes
	DefaultFirstWait    = 2 * time.Second  // what a request waits for a provider's first fetch
	DefaultFetchTimeout = 30 * time.Second // one provider's /models request, whole body included
)

// Model is one entry of the merged list, in OpenAI's shape.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // always "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Provider is the host of the provider that serves the model.
	Provider string `json:"-"`
	// Upstream is the model's id at its provider (ID without the prefix).
	Upstream string `json:"-"`
}

// Source is where the catalog learns the providers: every provider with
// keys (with the keys, for the /models requests) and the default
// provider's host. admin.Service and store.DB list them (ProvidersWithKeys);
// SourceOf pairs such a list with serve's default provider.
type Source interface {
	ProvidersWithKeys(ctx context.Context) ([]aiproxy.Provider, error)
	DefaultProvider() string
}

// SourceOf returns a Source that lists providers with list and names
// defaultHost (a normalised host, or an alias) as the default provider.
func SourceOf(list func(ctx context.Context) ([]aiproxy.Provider, error), defaultHost string) Source {
	return funcSource{list: list, def: defaultHost}
}

type funcSource struct {
	list func(ctx context.Context) ([]aiproxy.Provider, error)
	def  string
}

func (s funcSource) ProvidersWithKeys(ctx context.Context) ([]aiproxy.Provider, error) {
	return s.list(ctx)
}
func (s funcSource) DefaultProvider() string { return s.def }

// Option configures New.
type Option func(*Catalog)

// WithInterval sets the time between background refreshes (default 5 min).
func WithInterval(d time.Duration) Option { return func(c *Catalog) { c.interval = d } }

// WithFirstWait sets how long requests wait for a provider's first fetch
// (default 2 s), counted from when that fetch began.
func WithFirstWait(d time.Duration) Option { return func(c *Catalog) { c.firstWait = d } }

// WithFetchTimeout bounds one provider's /models request (default 30 s).
func WithFetchTimeout(d time.Duration) Option { return func(c *Catalog) { c.fetchTimeout = d } }

// Catalog is the merged model list. Its goroutines (one refresher, one per
// fetch in flight) end with Close.
type Catalog struct {
	src          Source
	client       *http.Client
	log          *slog.Logger
	interval     time.Duration
	firstWait    time.Duration
	fetchTimeout time.Duration
	now          func() time.Time
	after        func(time.Duration) <-chan time.Time // tests replace it

	ctx     context.Context // ends with Close; every fetch runs under it
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started sync.Once // the refresher runs from the first List or Get

	mu      sync.Mutex
	closed  bool
	entries map[string]*entry // by provider host
	version uint64            // bumped when a list, an alias or the set of providers changes
	merged  merged
}

// entry is one provider's list.
type entry struct {
	prov      aiproxy.Provider
	fetching  bool
	firstDone chan struct{} // closed when the first fetch ended
	ended     bool          // firstDone is closed
	gaveUp    bool          // a request waited its bound: later ones do not wait
	waitUntil time.Time     // requests wait for the first fetch until then
	ok        bool          // the last fetch gave a list
	models    []Model       // the provider's ids, unprefixed
}

// merged is the last merged list, valid for version and def.
type merged struct {
	version uint64
	def     string
	valid   bool
	list    []Model
	index   map[string]int
}

// New returns a catalog of src's providers, fetched with client (its
// timeouts and transport; nil: http.DefaultClient, which follows no
// redirect here either) and logged to log. It starts fetching when it is
// first asked for models (a serve whose users never list models never
// contacts a provider for them), and refreshes every interval until Close.
func New(src Source, client *http.Client, log *slog.Logger, opts ...Option) *Catalog {
	if client == nil {
		client = http.DefaultClient
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A provider key goes to its provider's base URL only: never follow a
	// redirect elsewhere (CONTRACT section 3).
	nc := *client
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &Catalog{
		src: src, client: &nc, log: log,
		interval: DefaultInterval, firstWait: DefaultFirstWait, fetchTimeout: DefaultFetchTimeout,
		now: time.Now, after: time.After,
		entries: map[string]*entry{},
	}
	for _, o := range opts {
		o(c)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// start starts the refresher, once.
func (c *Catalog) start() {
	c.started.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return
		}
		c.wg.Add(1)
		go c.run()
	})
}

// Close stops the refresher and every fetch in flight, and waits for them.
func (c *Catalog) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// run refreshes every provider at once, then every interval.
func (c *Catalog) run() {
	defer c.wg.Done()
	c.refresh()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.refresh()
		}
	}
}

// refresh starts a fetch of every provider that has none in flight.
func (c *Catalog) refresh() {
	provs, err := c.src.ProvidersWithKeys(c.ctx)
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn("model list: cannot list providers", "err", err)
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reconcile(provs)
	for _, e := range c.entries {
		c.startFetch(e)
	}
}

// reconcile brings the entries in line with provs: a new provider, or one
// whose URL, scheme, keys or headers changed, gets a new entry (which keeps
// the last good list, if any, until its fetch ends); a removed one goes.
// The caller holds c.mu.
func (c *Catalog) reconcile(provs []aiproxy.Provider) {
	seen := 0
	for i := range provs {
		p := &provs[i]
		e := c.entries[p.Host]
		switch {
		case e == nil || !sameFetch(e.prov, *p):
			ne := &entry{prov: *p, firstDone: make(chan struct{}), waitUntil: c.now().Add(c.firstWait)}
			if e != nil && e.ok {
				// Serve the last good list meanwhile, without waiting.
				ne.ok, ne.models, ne.ended = true, e.models, true
				close(ne.firstDone)
			}
			c.entries[p.Host] = ne
			c.version++
			c.startFetch(ne)
		case e.prov.Alias != p.Alias:
			e.prov = *p
			c.version++
		}
		seen++
	}
	if seen != len(c.entries) {
		for host := range c.entries {
			if !slices.ContainsFunc(provs, func(p aiproxy.Provider) bool { return p.Host == host }) {
				delete(c.entries, host)
				c.version++
			}
		}
	}
}

// sameFetch reports whether a and b fetch the same list the same way.
func sameFetch(a, b aiproxy.Provider) bool {
	return a.BaseURL == b.BaseURL && a.APIRoot == b.APIRoot && a.Auth == b.Auth &&
		slices.Equal(a.Keys, b.Keys) && maps.Equal(a.Headers, b.Headers)
}

// startFetch fetches e's list in a goroutine unless one is in flight or the
// catalog is closed. The caller holds c.mu.
func (c *Catalog) startFetch(e *entry) {
	if e.fetching || c.closed {
		return
	}
	e.fetching = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.fetchTimeout)
		list, err := fetch(ctx, c.client, e.prov)
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		e.fetching = false
		if err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("model list left out", "provider", e.prov.Host, "err", err)
			}
			e.ok, e.models = false, nil
		} else {
			e.ok, e.models = true, list
		}
		if !e.ended {
			e.ended = true
			close(e.firstDone)
		}
		if c.entries[e.prov.Host] == e {
			c.version++
		}
	}()
}

// List returns the merged list, the default provider's models first, then
// the others' by prefix, each provider's in its own order; allowed (nil:
// all) filters the ids as the user sees them. Until a provider's first
// fetch ends, List waits for it, at most the first-wait bound counted from
// when that fetch began; a provider that was waited for once is not waited
// for again. A failing source is logged and the lists in memory are used.
func (c *Catalog) List(ctx context.Context, allowed func(id string) bool) []Model {
	m := c.snapshot(ctx)
	out := make([]Model, 0, len(m.list))
	for _, x := range m.list {
		if allowed == nil || allowed(x.ID) {
			out = append(out, x)
		}
	}
	return out
}

// Get returns the model with id as List shows it, if allowed (nil: all).
func (c *Catalog) Get(ctx context.Context, id string, allowed func(id string) bool) (Model, bool) {
	m := c.snapshot(ctx)
	i, ok := m.index[id]
	if !ok || allowed != nil && !allowed(id) {
		return Model{}, false
	}
	return m.list[i], true
}

// snapshot brings the entries up to date with the source, waits for first
// fetches as List says, and returns the merged list.
func (c *Catalog) snapshot(ctx context.Context) merged {
	c.start()
	def := c.src.DefaultProvider()
	provs, err := c.src.ProvidersWithKeys(ctx)
	c.mu.Lock()
	if err != nil {
		c.log.Warn("model list: cannot list providers", "err", err)
	} else {
		c.reconcile(provs)
	}
	var pending []*entry
	var deadline time.Time
	for _, e := range c.entries {
		if !e.ended && !e.gaveUp {
			pending = append(pending, e)
			if e.waitUntil.After(deadline) {
				deadline = e.waitUntil
			}
		}
	}
	c.mu.Unlock()

	if len(pending) > 0 {
		c.wait(ctx, pending, deadline)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.merged.valid || c.merged.version != c.version || c.merged.def != def {
		c.merged = c.merge(def)
	}
	return c.merged
}

// wait waits until every pending first fetch ended, deadline passed or ctx
// ended; the providers still pending then are not waited for again.
func (c *Catalog) wait(ctx context.Context, pending []*entry, deadline time.Time) {
	var timer <-chan time.Time
	if d := deadline.Sub(c.now()); d > 0 {
		timer = c.after(d)
	} else {
		timer = closedTime
	}
	for _, e := range pending {
		select {
		case <-e.firstDone:
			continue
		case <-timer:
		case <-ctx.Done():
			return
		}
		c.mu.Lock()
		for _, p := range pending {
			if !p.ended {
				p.gaveUp = true
			}
		}
		c.mu.Unlock()
		return
	}
}

var closedTime = func() <-chan time.Time {
	ch := make(chan time.Time)
	close(ch)
	return ch
}()

// merge builds the merged list. The caller holds c.mu.
func (c *Catalog) merge(def string) merged {
	m := merged{version: c.version, def: def, valid: true, index: map[string]int{}}
	es := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		if e.ok {
			es = append(es, e)
		}
	}
	isDefault := func(e *entry) bool {
		return e.prov.Host == def || e.prov.Alias != "" && strings.EqualFold(e.prov.Alias, def)
	}
	slices.SortFunc(es, func(a, b *entry) int {
		if da, db := isDefault(a), isDefault(b); da != db {
			if da {
				return -1
			}
			return 1
		}
		return strings.Compare(a.prov.Name(), b.prov.Name())
	})
	for _, e := range es {
		prefix := ""
		if !isDefault(e) {
			prefix = e.prov.Name() + "/"
		}
		for _, x := range e.models {
			x.ID = prefix + x.Upstream
			if _, dup := m.index[x.ID]; dup {
				continue // the first provider keeps a name
			}
			m.index[x.ID] = len(m.list)
			m.list = append(m.list, x)
		}
	}
	return m
}

// listJSON is OpenAI's model list.
type listJSON struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}

// ServeList answers GET /v1/models: the merged list filtered by allowed
// (nil: all), as OpenAI's {"object":"list","data":[…]}.
func (c *Catalog) ServeList(w http.ResponseWriter, r *http.Request, allowed func(string) bool) {
	writeJSON(w, listJSON{Object: "list", Data: c.List(r.Context(), allowed)})
}

// ServeOne answers GET /v1/models/{id}: the model, or 404 not_found when
// the list has no such model or allowed (nil: all) refuses it.
func (c *Catalog) ServeOne(w http.ResponseWriter, r *http.Request, id string, allowed func(string) bool) {
	m, ok := c.Get(r.Context(), id, allowed)
	if !ok {
		httperr.Write(w, aiproxy.Errorf(aiproxy.ENOTFOUND, "model %s not found", quoteClip(id)))
		return
	}
	writeJSON(w, m)
}

func quoteClip(s string) string {
	b, _ := json.Marshal(aiproxy.Clip(s, aiproxy.MaxModelLen))
	return string(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		httperr.Write(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}

// Serve answers GET /v1/models (id "") or /v1/models/{id}: the proxy's
// entry point.
func (c *Catalog) Serve(w http.ResponseWriter, r *http.Request, id string, allowed func(string) bool) {
	if id == "" {
		c.ServeList(w, r, allowed)
		return
	}
	c.ServeOne(w, r, id, allowed)
}
