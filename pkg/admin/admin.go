// Package admin is the one service layer behind the CLI commands and the
// HTTP admin and self-service routes: each operation validates its input,
// makes keys, and calls the store, so the two transports cannot drift.
package admin

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/audit"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// Service runs admin operations on one store.
type Service struct {
	db *store.DB
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// NewKey makes user keys; tests may replace it.
	NewKey func() string
	// ReservedSegment, when set, names first path segments that a provider
	// alias may not take besides aiproxy.Reserved's: serve sets it to
	// recognise its admin token.
	ReservedSegment func(seg string) bool
}

// New returns a Service over db.
func New(db *store.DB) *Service {
	return &Service{db: db, Now: time.Now, NewKey: keys.New}
}

// Expiry is an optional change of a key's expiry.
type Expiry struct {
	Set bool       // false: leave the expiry as it is (or none, for a new user)
	At  *time.Time // when Set: the new expiry, nil for never
}

// ExpiryFrom parses D ("30d", "2027-01-31", RFC 3339) into an Expiry; an
// empty string leaves the expiry unchanged.
func (s *Service) ExpiryFrom(d string) (Expiry, error) {
	if d == "" {
		return Expiry{}, nil
	}
	t, err := aiproxy.ParseExpiry(d, s.Now())
	if err != nil {
		return Expiry{}, err
	}
	return Expiry{Set: true, At: &t}, nil
}

func (s *Service) checkFuture(e Expiry) error {
	if e.Set && e.At != nil && !e.At.After(s.Now()) {
		return aiproxy.Errorf(aiproxy.EINVALID, "expiry %s is in the past", e.At.UTC().Format(time.RFC3339))
	}
	return nil
}

// CreateUser makes user name with a new key and returns the key, which is
// never shown again. Errors: EINVALID (name, expiry), ECONFLICT.
func (s *Service) CreateUser(ctx context.Context, name string, exp Expiry) (_ string, err error) {
	ctx, end := s.change(ctx, "user.create", name)
	defer func() { end(err) }()
	if err := aiproxy.ValidateUserName(name); err != nil {
		return "", err
	}
	if err := s.checkFuture(exp); err != nil {
		return "", err
	}
	key := s.NewKey()
	if err := s.db.CreateUser(ctx, name, keys.Hash(key), keys.Hint(key), s.Now(), exp.At); err != nil {
		return "", err
	}
	return key, nil
}

// ResetUser gives user name a new key; the old one stops working at once.
// Without exp.Set the expiry is kept. Errors: EINVALID, ENOTFOUND.
func (s *Service) ResetUser(ctx context.Context, name string, exp Expiry) (_ string, err error) {
	ctx, end := s.change(ctx, "user.reset", name)
	defer func() { end(err) }()
	if err := aiproxy.ValidateUserName(name); err != nil {
		return "", err
	}
	if err := s.checkFuture(exp); err != nil {
		return "", err
	}
	key := s.NewKey()
	if err := s.db.ResetUserKey(ctx, name, keys.Hash(key), keys.Hint(key), exp.Set, exp.At); err != nil {
		return "", err
	}
	return key, nil
}

// SetUserExpiry changes when user name's key expires (exp.At nil: never).
// Errors: EINVALID, ENOTFOUND.
func (s *Service) SetUserExpiry(ctx context.Context, name string, exp Expiry) (err error) {
	ctx, end := s.change(ctx, "user.expire", name)
	defer func() { end(err) }()
	if err := aiproxy.ValidateUserName(name); err != nil {
		return err
	}
	if err := s.checkFuture(exp); err != nil {
		return err
	}
	if !exp.Set {
		// Nothing to change; a missing user is still an error.
		_, err := s.db.UserByName(ctx, name)
		return err
	}
	return s.db.SetUserExpiry(ctx, name, exp.At)
}

// DeleteUser removes user name; its key stops working at once.
// Errors: EINVALID, ENOTFOUND.
func (s *Service) DeleteUser(ctx context.Context, name string) (err error) {
	ctx, end := s.change(ctx, "user.delete", name)
	defer func() { end(err) }()
	if err := aiproxy.ValidateUserName(name); err != nil {
		return err
	}
	return s.db.DeleteUser(ctx, name)
}

// ListUsers returns all users by name. Keys are never included.
// Each row carries its limits, with what the current periods used (limits.go).
func (s *Service) ListUsers(ctx context.Context) ([]aiproxy.User, error) {
	users, err := s.db.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	return users, s.fillLimits(ctx, users)
}

// ProviderKey describes one `provider add`.
type ProviderKey struct {
	Host        string
	Key         string
	BaseURL     string // empty: keep the host's URL, or https://HOST for a new host
	InjectUsage *bool  // nil: keep (true for a new host)
	// Alias, APIRoot and Auth: empty keeps the host's (a new host: no alias,
	// and the API root and auth scheme its host is known to use).
	Alias, APIRoot, Auth string
}

// AddProviderKey stores one more key for a host. Errors: EINVALID (host,
// key, URL), ECONFLICT (same key again, or a different base URL).
func (s *Service) AddProviderKey(ctx context.Context, p ProviderKey) (err error) {
	ctx, end := s.change(ctx, "provider.add", p.Host)
	defer func() { end(err) }()
	host, err := aiproxy.NormalizeHost(p.Host)
	if err != nil {
		return err
	}
	key, err := validateProviderKey(p.Key)
	if err != nil {
		return err
	}
	baseURL := ""
	if p.BaseURL != "" {
		if baseURL, err = aiproxy.NormalizeBaseURL(p.BaseURL); err != nil {
			return err
		}
	}
	set, err := s.providerSettings(ProviderSettings{Alias: nonEmpty(p.Alias), APIRoot: nonEmpty(p.APIRoot), Auth: nonEmpty(p.Auth)})
	if err != nil {
		return err
	}
	return s.db.AddProviderKey(ctx, store.ProviderKey{
		Host: host, BaseURL: baseURL, DefaultBaseURL: "https://" + host, InjectUsage: p.InjectUsage,
		Alias: deref(set.Alias), APIRoot: deref(set.APIRoot), Auth: deref(set.Auth),
		DefaultAPIRoot: defaultAPIRoot(host, baseURL), DefaultAuth: aiproxy.DefaultAuth(host),
		Secret: key, KeyHash: keys.Hash(key), KeyHint: keys.Hint(key),
	}, s.Now())
}

// validateProviderKey trims surrounding space and refuses an empty key or
// one with spaces or control bytes, which no provider issues.
func validateProviderKey(k string) (string, error) {
	k = strings.TrimSpace(k)
	if k == "" {
		return "", aiproxy.Errorf(aiproxy.EINVALID, "provider key must not be empty")
	}
	if len(k) > 1024 {
		return "", aiproxy.Errorf(aiproxy.EINVALID, "provider key is longer than 1024 characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] >= 0x7f {
			return "", aiproxy.Errorf(aiproxy.EINVALID, "provider key must be printable ASCII without spaces")
		}
	}
	return k, nil
}

// SetProviderInjectUsage sets whether aiproxy asks host's streams for usage.
// Errors: EINVALID, ENOTFOUND.
func (s *Service) SetProviderInjectUsage(ctx context.Context, host string, inject bool) (err error) {
	ctx, end := s.change(ctx, "provider.set", host)
	defer func() { end(err) }()
	h, err := aiproxy.NormalizeHost(host)
	if err != nil {
		return err
	}
	return s.db.SetProviderInjectUsage(ctx, h, inject)
}

// SetProviderBaseURL moves host, with its keys, to another base URL, which
// must parse as scheme://host[:port][/path]. The request path is appended
// to it unchanged, so it holds no /v1. Errors: EINVALID (host, URL),
// ENOTFOUND.
func (s *Service) SetProviderBaseURL(ctx context.Context, host, baseURL string) (err error) {
	ctx, end := s.change(ctx, "provider.set", host)
	defer func() { end(err) }()
	h, err := aiproxy.NormalizeHost(host)
	if err != nil {
		return err
	}
	u, err := aiproxy.NormalizeBaseURL(baseURL)
	if err != nil {
		return err
	}
	// Until store.DB has SetProviderBaseURL (one UPDATE in a write tx,
	// ENOTFOUND for an unknown host), this reports an internal error
	// after the checks above.
	st, ok := any(s.db).(interface {
		SetProviderBaseURL(ctx context.Context, host, baseURL string) error
	})
	if !ok {
		if _, err := s.db.ProviderByHost(ctx, h); err != nil {
			return err
		}
		return errors.New("set provider base URL: not supported by this store yet")
	}
	return st.SetProviderBaseURL(ctx, h, u)
}

// RemoveProvider removes one key of host, or the whole host when key is
// empty. Errors: EINVALID, ENOTFOUND.
func (s *Service) RemoveProvider(ctx context.Context, host, key string) (err error) {
	action := "provider.remove"
	if key != "" {
		action = "provider.remove_key"
	}
	ctx, end := s.change(ctx, action, host)
	defer func() { end(err) }()
	h, err := aiproxy.NormalizeHost(host)
	if err != nil {
		return err
	}
	if key == "" {
		return s.db.RemoveProvider(ctx, h)
	}
	k, err := validateProviderKey(key)
	if err != nil {
		return err
	}
	return s.db.RemoveProviderKey(ctx, h, keys.Hash(k))
}

// ListProviders returns all providers with key hints, never keys.
func (s *Service) ListProviders(ctx context.Context) ([]aiproxy.Provider, error) {
	return s.db.ListProviders(ctx)
}

// StatsQuery is a stats request as both transports receive it.
type StatsQuery struct {
	User  string
	Since string // D: a duration back from now, a date, or RFC 3339
	By    string
}

// Stats returns usage totals. A user named in q must exist or have usage
// on record (a deleted user's past requests still count), so that a typo
// is not shown as a user who never made a request.
// Errors: EINVALID (since, by), ENOTFOUND (user).
func (s *Service) Stats(ctx context.Context, q StatsQuery) ([]aiproxy.StatsRow, error) {
	f := aiproxy.StatsFilter{User: q.User, By: q.By}
	if q.Since != "" {
		t, err := aiproxy.ParseSince(q.Since, s.Now())
		if err != nil {
			return nil, err
		}
		f.Since = t
	}
	rows, err := s.db.Stats(ctx, f)
	if err != nil || q.User == "" || requests(rows) > 0 {
		return rows, err
	}
	if err := s.checkStatsUser(ctx, q.User); err != nil {
		return nil, err
	}
	return rows, nil
}

// checkStatsUser returns ENOTFOUND unless user name exists or once made a
// request (at any time: Stats' own filter may have hidden it).
func (s *Service) checkStatsUser(ctx context.Context, name string) error {
	_, err := s.db.UserByName(ctx, name)
	if aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		return err
	}
	all, err := s.db.Stats(ctx, aiproxy.StatsFilter{User: name})
	if err != nil {
		return err
	}
	if requests(all) == 0 {
		// The name is not echoed: over HTTP it is a query value that may
		// hold a key pasted by mistake (TestAdmin_NoSecrets). The CLI,
		// whose user typed it, names it.
		return aiproxy.Errorf(aiproxy.ENOTFOUND, "user not found")
	}
	return nil
}

func requests(rows []aiproxy.StatsRow) int64 {
	var n int64
	for _, r := range rows {
		n += r.Requests
	}
	return n
}

// Authenticate returns the user holding key. Errors: EUNAUTHORIZED for a
// malformed or unknown key, EEXPIRED (message says when) for an expired one.
func (s *Service) Authenticate(ctx context.Context, key string) (aiproxy.User, error) {
	if !keys.Valid(key) {
		return aiproxy.User{}, aiproxy.InvalidKey()
	}
	u, err := s.db.UserByKeyHash(ctx, keys.Hash(key))
	if err != nil {
		return u, err
	}
	if u.Expired(s.Now()) {
		return aiproxy.User{}, aiproxy.Errorf(aiproxy.EEXPIRED, "API key expired at %s", u.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return u, nil
}

// Me is what GET /me shows a user about their own key.
type Me struct {
	Name      string              `json:"name"`
	KeyHint   string              `json:"key_hint"`
	ExpiresAt *time.Time          `json:"expires_at"`
	Usage     aiproxy.UsageTotals `json:"usage"`
	Limits    aiproxy.LimitsView  `json:"limits"`
}

// Me returns the caller's own record and usage. Errors: as Authenticate.
func (s *Service) Me(ctx context.Context, key string) (Me, error) {
	u, err := s.Authenticate(ctx, key)
	if err != nil {
		return Me{}, err
	}
	t, err := s.db.UserUsage(ctx, u.ID)
	if err != nil {
		return Me{}, err
	}
	lim, err := s.userLimits(ctx, u.ID)
	if err != nil {
		return Me{}, err
	}
	return Me{Name: u.Name, KeyHint: u.KeyHint, ExpiresAt: u.ExpiresAt, Usage: t, Limits: lim}, nil
}

// ResetOwnKey replaces the caller's key with a new one and returns the user
// name and new key. The old key dies in the same commit; of concurrent
// resets with one key exactly one succeeds. Errors: as Authenticate.
func (s *Service) ResetOwnKey(ctx context.Context, key string) (name, newKey string, err error) {
	u, err := s.Authenticate(ctx, key)
	if err != nil {
		// Not audited: a refused key names no user, and recording every
		// stranger's attempt would let anyone fill the disk.
		return "", "", err
	}
	ctx, end := s.change(ctx, "user.reset_self", u.Name)
	defer func() {
		if aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
			end(err)
		}
	}()
	nk := s.NewKey()
	u, err = s.db.ReplaceUserKey(ctx, keys.Hash(key), keys.Hash(nk), keys.Hint(nk))
	if err != nil {
		return "", "", err
	}
	return u.Name, nk, nil
}

// change names the admin change that its caller is about to make, action
// on target, for the audit log (pkg/audit). The change is recorded by the
// store in the transaction that makes it; end(err) records a change that
// ended without one (refused before any write, or with nothing to change),
// in a transaction of its own. Every method that changes something starts
// with it:
//
//	ctx, end := s.change(ctx, "user.create", name)
//	defer func() { end(err) }()
func (s *Service) change(ctx context.Context, action, target string) (context.Context, func(error)) {
	ctx, _ = audit.Begin(ctx, action, target, s.Now())
	return ctx, func(err error) { s.db.RecordAudit(ctx, err) }
}

// EndChange records the change named in ctx (by a transport's fallback,
// pkg/audit) as refused by err, unless it is already recorded: for a
// transport whose request was refused before the service named its change.
func (s *Service) EndChange(ctx context.Context, err error) {
	if err != nil {
		s.db.RecordAudit(ctx, err)
	}
}

// AuditLog returns the audit log since D (a duration back from now, a date
// or RFC 3339; empty: all of it), oldest first. Errors: EINVALID (since).
func (s *Service) AuditLog(ctx context.Context, since string) ([]audit.Record, error) {
	var t time.Time
	if since != "" {
		var err error
		if t, err = aiproxy.ParseSince(since, s.Now()); err != nil {
			return nil, err
		}
	}
	return s.db.AuditLog(ctx, t)
}

// Backup writes a consistent snapshot of the database to path.
func (s *Service) Backup(ctx context.Context, path string) error {
	return s.db.Backup(ctx, path)
}

// Provider returns host (normalised) with its secret keys, for the proxy
// only. Errors: EINVALID for a malformed host, ENOTFOUND for an unknown one.
func (s *Service) Provider(ctx context.Context, host string) (aiproxy.Provider, error) {
	h, err := aiproxy.NormalizeHost(host)
	if err != nil {
		return aiproxy.Provider{}, err
	}
	return s.db.ProviderByHost(ctx, h)
}

// RecordUsage writes a batch of usage records.
func (s *Service) RecordUsage(ctx context.Context, batch []aiproxy.Usage) error {
	return s.db.InsertUsage(ctx, batch)
}

// Ping checks that the database answers.
func (s *Service) Ping(ctx context.Context) error { return s.db.Ping(ctx) }
