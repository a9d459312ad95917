package server

// The admin routes are the seed worker's curl interface plus everything else
// the CLI can do, each a thin translation onto admin.Service (STYLE.md §2).
// Every route answers twice: as /{token}/… (the seed's form, token in the
// path) and as /admin/… with Authorization: Bearer {token}, which keeps the
// token out of URLs.
//
//	POST   /{token}/register/{name}[?expires=D]    the new key (text/plain) | {"name","key"}
//	POST   /{token}/reset/{name}[?expires=D]       the new key              | {"name","key"}
//	DELETE /{token}/delete/{name}                  OK                       | {"ok":true}
//	POST   /{token}/expire/{name}?expires=D        OK                       | {"ok":true}
//	POST   /{token}/expire/{name}?never=1          OK                       | {"ok":true}
//	POST   /{token}/addkey/{host}/{key}[?base_url=URL&inject_usage=B]  OK  | {"ok":true}
//	POST   /admin/addkey/{host}  {"key","base_url","inject_usage","alias","api_root","auth"}  OK | {"ok":true}
//	       (addkey/{host}/{key} takes ?alias=&api_root=&auth= too)
//	GET    /{token}/users                          JSON array of users
//	GET    /{token}/providers                      JSON array of providers
//	POST   /{token}/provider/{host}  {"base_url","alias","api_root","auth","inject_usage","headers"}
//	       (or ?inject_usage=B)                    the provider's row (JSON)
//	DELETE /{token}/provider/{host}                OK (the whole host)      | {"ok":true}
//	DELETE /{token}/provider/{host}/{key}          OK (one key)             | {"ok":true}
//	       or DELETE /{token}/provider/{host} with the body {"key":"…"}
//	GET    /{token}/stats[?user=&since=&by=]       JSON array of stats rows
//	GET    /{token}/audit[?since=D]                JSON array of audit records (admin_audit.go)
//	GET    /{token}/prices, POST|DELETE /{token}/price/{model...}  (admin_prices.go)
//
// D is what the CLI's --expires takes: 30d, 12h, 2027-01-31 or RFC 3339.
// expire is the twin of `user expire NAME --in D|--at DATE|--never`: exactly
// one of ?expires=D (a duration or a date) and ?never=1 must be given.
// POST provider/{host} is the twin of `provider set HOST …`.
// `backup` has no twin on purpose: a copy of the database holds the provider
// keys, which never leave the process.
//
// Order of checks, so that nothing about the routes leaks to a non-admin:
// admin surface off → 403 as for an unknown path; address throttled → 429;
// wrong or missing token → the same 403; then the method (405 with Allow);
// then the operation, whose errors are OpenAI-shaped (400, 404, 409).
// Answers past the token check, and 429s, carry Cache-Control: no-store
// (a 403 stays byte-identical to an unknown path's); no admin answer
// carries CORS headers.

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/httperr"
)

// Throttle of wrong admin tokens, per client address: a burst of
// guardBurst wrong tokens, then one more every guardInterval (10 a minute).
// While an address is throttled its requests get 429 without the token
// being looked at, so a correct guess cannot be told apart either.
const (
	guardBurst    = 10
	guardInterval = 6 * time.Second
	// guardMaxClients bounds the memory of the throttle. When it is full,
	// addresses whose debt is paid are forgotten first, then the one
	// closest to being paid.
	guardMaxClients = 4096
	// maxAdminBody bounds a JSON request body.
	maxAdminBody = 64 << 10
)

// tokenGuard checks admin tokens in constant time and throttles wrong ones
// per client address with a GCRA (generic cell rate algorithm): each
// address has a theoretical arrival time that every wrong token pushes
// guardInterval further; the address is throttled while that time is more
// than guardBurst-1 intervals ahead. A correct token forgets the address.
// It has no goroutine: expired entries are dropped when the map is full.
type tokenGuard struct {
	mu       sync.Mutex
	on       bool
	want     [sha256.Size]byte
	now      func() time.Time
	burst    int
	interval time.Duration
	max      int
	tat      map[string]time.Time // client → theoretical arrival time
}

func newTokenGuard() *tokenGuard {
	return &tokenGuard{
		now:      time.Now,
		burst:    guardBurst,
		interval: guardInterval,
		max:      guardMaxClients,
		tat:      make(map[string]time.Time),
	}
}

// setToken enables the guard for token; an empty token leaves it off.
func (g *tokenGuard) setToken(token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.on = token != ""
	g.want = sha256.Sum256([]byte(token))
}

// admit checks token for client. It returns ok for the right token, and a
// positive retry for a client that has sent too many wrong ones (the token
// is then not checked). A wrong non-empty token counts against client; an
// empty one (no Authorization header) does not. tripped reports that this
// wrong token used up the client's burst, once per throttling.
func (g *tokenGuard) admit(client, token string) (ok bool, retry time.Duration, tripped bool) {
	got := sha256.Sum256([]byte(token))
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on {
		return false, 0, false
	}
	now := g.now()
	tolerance := time.Duration(g.burst-1) * g.interval
	tat, seen := g.tat[client]
	if seen {
		if wait := tat.Add(-tolerance).Sub(now); wait > 0 {
			return false, wait, false
		}
	}
	// Comparing hashes keeps the length of the token out of the timing.
	if subtle.ConstantTimeCompare(got[:], g.want[:]) == 1 {
		delete(g.tat, client)
		return true, 0, false
	}
	if token == "" {
		return false, 0, false
	}
	if !seen {
		g.makeRoom(now)
	}
	if tat.Before(now) {
		tat = now
	}
	tat = tat.Add(g.interval)
	g.tat[client] = tat
	return false, 0, tat.Add(-tolerance).After(now)
}

// makeRoom keeps the map under g.max entries: it drops every entry whose
// debt is paid, and if none is, the one closest to being paid.
func (g *tokenGuard) makeRoom(now time.Time) {
	if len(g.tat) < g.max {
		return
	}
	var oldest string
	var oldestTAT time.Time
	found := false
	for c, t := range g.tat {
		if !t.After(now) {
			delete(g.tat, c)
			continue
		}
		if !found || t.Before(oldestTAT) {
			oldest, oldestTAT, found = c, t, true
		}
	}
	if len(g.tat) >= g.max && found {
		delete(g.tat, oldest)
	}
}

// clientKey is the throttle's key for r: the connection's address, never a
// header a client can forge (X-Forwarded-For). IPv6 addresses count per /64,
// the block one subscriber usually holds.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.String()
	}
	return a.String()
}

// adminFunc handles one admin route; an error is answered by writeError.
type adminFunc func(w http.ResponseWriter, r *http.Request) error

// methods maps the methods one admin route answers to their handlers.
type methods map[string]adminFunc

// registerAdmin registers every admin route in both forms. The patterns
// have no method, so that the method is checked only after the token: a
// non-admin sees 403 for every method, and the mux's plain-text 405 never
// answers.
func (s *Server) registerAdmin(mux *http.ServeMux) {
	s.guard.setToken(s.cfg.AccessToken)
	route := func(pattern string, m methods) {
		mux.HandleFunc("/{token}"+pattern, s.admin(false, m))
		mux.HandleFunc("/admin"+pattern, s.admin(true, m))
	}
	route("/register/{name}", methods{http.MethodPost: s.adminRegister})
	route("/reset/{name}", methods{http.MethodPost: s.adminReset})
	route("/delete/{name}", methods{http.MethodDelete: s.adminDelete})
	route("/expire/{name}", methods{http.MethodPost: s.adminExpire})
	route("/addkey/{host}/{key}", methods{http.MethodPost: s.adminAddKey})
	mux.HandleFunc("/admin/addkey/{host}", s.admin(true, methods{http.MethodPost: s.adminAddKey}))
	route("/users", methods{http.MethodGet: s.adminUsers})
	route("/providers", methods{http.MethodGet: s.adminProviders})
	route("/provider/{host}", methods{http.MethodDelete: s.adminRemoveProvider, http.MethodPost: s.adminSetProvider})
	route("/provider/{host}/{key}", methods{http.MethodDelete: s.adminRemoveProvider})
	route("/stats", methods{http.MethodGet: s.adminStats})
	route("/limit/{name}", methods{http.MethodPost: s.adminLimit}) // admin_limits.go
	route("/audit", methods{http.MethodGet: s.adminAudit})
	route("/prices", methods{http.MethodGet: s.adminPrices})
	route("/price/{model...}", methods{http.MethodPost: s.adminSetPrice, http.MethodDelete: s.adminRemovePrice})
}

// admin wraps the handlers of one route with the token, throttle and method
// checks. bearer selects where the token is: the Authorization header
// (/admin/…) or the first path segment (/{token}/…). A GET route answers
// HEAD too.
func (s *Server) admin(bearer bool, m methods) http.HandlerFunc {
	if h, ok := m[http.MethodGet]; ok {
		m[http.MethodHead] = h
	}
	allow := slices.Sorted(maps.Keys(m))
	return func(w http.ResponseWriter, r *http.Request) {
		var token string
		if bearer {
			token, _ = Bearer(r)
		} else {
			token = r.PathValue("token")
		}
		client := clientKey(r)
		ok, retry, tripped := s.guard.admit(client, token)
		if tripped {
			s.log.Warn("admin token guesses throttled", "client", client,
				"burst", s.guard.burst, "interval", s.guard.interval.String())
		}
		if retry > 0 {
			secs := int((retry + time.Second - 1) / time.Second)
			setAdminHeaders(w)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			httperr.Write(w, aiproxy.Errorf(aiproxy.ERATELIMITED, "too many wrong admin tokens from this address: retry in %ds", secs))
			return
		}
		if !ok {
			s.forbidden(w, r)
			return
		}
		setAdminHeaders(w)
		h, ok := m[r.Method]
		if !ok {
			list := strings.Join(allow, ", ")
			w.Header().Set("Allow", list)
			httperr.Write(w, notAllowed(r.Method, list))
			return
		}
		r = r.WithContext(auditContext(r))
		if err := h(w, r); err != nil {
			s.svc.EndChange(r.Context(), err) // a change refused before the service named it
			s.writeError(w, r, err)
		}
	}
}

func (s *Server) adminRegister(w http.ResponseWriter, r *http.Request) error {
	exp, err := s.svc.ExpiryFrom(r.URL.Query().Get("expires"))
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	key, err := s.svc.CreateUser(r.Context(), name, exp)
	if err != nil {
		return err
	}
	writeKey(w, r, name, key)
	return nil
}

func (s *Server) adminReset(w http.ResponseWriter, r *http.Request) error {
	exp, err := s.svc.ExpiryFrom(r.URL.Query().Get("expires"))
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	key, err := s.svc.ResetUser(r.Context(), name, exp)
	if err != nil {
		return err
	}
	writeKey(w, r, name, key)
	return nil
}

func (s *Server) adminDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.DeleteUser(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeOK(w, r)
	return nil
}

// adminExpire is the twin of `user expire NAME --in D|--at DATE|--never`:
// ?expires=D takes a duration or a date, ?never=1 removes the expiry.
func (s *Server) adminExpire(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	never, err := queryBool(q, "never")
	if err != nil {
		return err
	}
	d := q.Get("expires")
	var exp admin.Expiry
	switch {
	case never && d != "":
		return aiproxy.Errorf(aiproxy.EINVALID, "give either ?expires=D or ?never=1, not both")
	case never:
		exp = admin.Expiry{Set: true}
	case d != "":
		if exp, err = s.svc.ExpiryFrom(d); err != nil {
			return err
		}
	default:
		return aiproxy.Errorf(aiproxy.EINVALID, "want ?expires=D (a duration such as 30d or a date such as 2027-01-31) or ?never=1")
	}
	if err := s.svc.SetUserExpiry(r.Context(), r.PathValue("name"), exp); err != nil {
		return err
	}
	writeOK(w, r)
	return nil
}

// adminAddKey stores one more key for a host: the key from the path, or
// (POST /admin/addkey/{host}) from a JSON body. A known host keeps its base
// URL; a new one gets https://{host}, as in the seed, unless base_url says
// otherwise.
func (s *Server) adminAddKey(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p := admin.ProviderKey{Host: r.PathValue("host"), Key: r.PathValue("key"), BaseURL: q.Get("base_url"),
		Alias: q.Get("alias"), APIRoot: q.Get("api_root"), Auth: q.Get("auth")}
	if q.Has("inject_usage") {
		v, err := queryBool(q, "inject_usage")
		if err != nil {
			return err
		}
		p.InjectUsage = &v
	}
	if p.Key == "" {
		var body struct {
			Key         string `json:"key"`
			BaseURL     string `json:"base_url"`
			InjectUsage *bool  `json:"inject_usage"`
			Alias       string `json:"alias"`
			APIRoot     string `json:"api_root"`
			Auth        string `json:"auth"`
		}
		present, err := decodeBody(w, r, &body)
		if err != nil {
			return err
		}
		if !present {
			return aiproxy.Errorf(aiproxy.EINVALID, `missing request body: want {"key":"…","base_url":"…"} or the key in the path`)
		}
		p.Key = body.Key
		if body.BaseURL != "" {
			p.BaseURL = body.BaseURL
		}
		if body.InjectUsage != nil {
			p.InjectUsage = body.InjectUsage
		}
		p.Alias, p.APIRoot, p.Auth = cmp.Or(body.Alias, p.Alias), cmp.Or(body.APIRoot, p.APIRoot), cmp.Or(body.Auth, p.Auth)
	}
	if err := s.svc.AddProviderKey(r.Context(), p); err != nil {
		return err
	}
	writeOK(w, r)
	return nil
}

// adminRemoveProvider removes a whole host, or one of its keys when a key
// is given in the path or as a JSON body {"key":"…"}.
func (s *Server) adminRemoveProvider(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("key")
	if key == "" {
		var body struct {
			Key string `json:"key"`
		}
		present, err := decodeBody(w, r, &body)
		if err != nil {
			return err
		}
		if key = body.Key; present && key == "" {
			return aiproxy.Errorf(aiproxy.EINVALID, `request body must be {"key":"…"} with a non-empty key, or empty to remove the whole host`)
		}
	}
	if err := s.svc.RemoveProvider(r.Context(), r.PathValue("host"), key); err != nil {
		return err
	}
	writeOK(w, r)
	return nil
}

// adminSetProvider is the twin of `provider set HOST …`: POST
// /{token}/provider/{host} with a JSON body {"base_url","alias","api_root",
// "auth","inject_usage","headers"} (each optional; "alias":"" removes the
// alias, a header with an empty value is removed), or the older
// ?inject_usage=true|false. The answer is the provider's row, as
// GET /{token}/providers shows it.
func (s *Server) adminSetProvider(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		BaseURL     *string           `json:"base_url"`
		Alias       *string           `json:"alias"`
		APIRoot     *string           `json:"api_root"`
		Auth        *string           `json:"auth"`
		InjectUsage *bool             `json:"inject_usage"`
		Headers     map[string]string `json:"headers"`
	}
	if _, err := decodeBody(w, r, &body); err != nil {
		return err
	}
	set := admin.ProviderSettings{BaseURL: body.BaseURL, Alias: body.Alias, APIRoot: body.APIRoot, Auth: body.Auth,
		InjectUsage: body.InjectUsage, Headers: body.Headers}
	if q := r.URL.Query(); q.Has("inject_usage") {
		v, err := queryBool(q, "inject_usage")
		if err != nil {
			return err
		}
		set.InjectUsage = &v
	}
	row, err := s.svc.SetProvider(r.Context(), r.PathValue("host"), set)
	if err != nil {
		return err
	}
	row.Keys = nil
	if row.KeyHints == nil {
		row.KeyHints = []string{}
	}
	writeJSON(w, http.StatusOK, row)
	return nil
}

func (s *Server) adminUsers(w http.ResponseWriter, r *http.Request) error {
	users, err := s.svc.ListUsers(r.Context())
	if err != nil {
		return err
	}
	if users == nil {
		users = []aiproxy.User{}
	}
	writeJSON(w, http.StatusOK, users)
	return nil
}

func (s *Server) adminProviders(w http.ResponseWriter, r *http.Request) error {
	provs, err := s.svc.ListProviders(r.Context())
	if err != nil {
		return err
	}
	if provs == nil {
		provs = []aiproxy.Provider{}
	}
	for i := range provs {
		provs[i].Keys = nil
		if provs[i].KeyHints == nil {
			provs[i].KeyHints = []string{}
		}
	}
	writeJSON(w, http.StatusOK, provs)
	return nil
}

func (s *Server) adminStats(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	by := q.Get("by")
	rows, err := s.svc.Stats(r.Context(), admin.StatsQuery{User: q.Get("user"), Since: q.Get("since"), By: by})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, admin.StatsJSON(by, rows))
	return nil
}

// decodeBody reads a small JSON object into v and reports whether there was
// one: an empty body is not an error. Error messages never echo the body,
// which may hold a key.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (bool, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	switch {
	case errors.Is(err, io.EOF):
		return false, nil
	case err != nil:
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return true, aiproxy.Errorf(aiproxy.EINVALID, "request body is larger than %d bytes", maxAdminBody)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return true, aiproxy.Errorf(aiproxy.EINVALID, "request body field %s has the wrong type", strconv.Quote(typ.Field))
		}
		if strings.HasPrefix(err.Error(), "json: unknown field") {
			return true, aiproxy.Errorf(aiproxy.EINVALID, "request body has an unknown field")
		}
		return true, aiproxy.Errorf(aiproxy.EINVALID, "request body is not a valid JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return true, aiproxy.Errorf(aiproxy.EINVALID, "request body has data after the JSON object")
	}
	return true, nil
}

// queryBool reads a boolean query parameter: absent is false, present
// without a value ("?never") is true, else 1/0/true/false.
func queryBool(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, aiproxy.Errorf(aiproxy.EINVALID, "%s must be true or false (1 or 0)", name)
	}
	return b, nil
}

// writeKey answers a new key: text/plain as the seed did, or {"name","key"}.
func writeKey(w http.ResponseWriter, r *http.Request, name, key string) {
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, struct {
			Name string `json:"name"`
			Key  string `json:"key"`
		}{name, key})
		return
	}
	writeText(w, key)
}

// writeOK answers a change without a result: "OK" as the seed did, or
// {"ok":true}.
func writeOK(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return
	}
	writeText(w, "OK")
}

// setAdminHeaders marks an admin answer: never cached, and never a
// Referer that could carry a token-bearing URL elsewhere (KEY-7).
func setAdminHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
}
