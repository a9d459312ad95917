package aiproxy

import "context"

// LookupScope lets the lookups of one proxied request (its user, then its
// provider, or several providers for model routing) share one check that
// the store's caches are current. The request is answered as of that check,
// made by its first lookup: a change committed after it applies from the
// next request on, which is what CONTRACT promises ("refused at its next
// request"). Without a scope every lookup checks.
type LookupScope struct{ checked bool }

type lookupScopeKey struct{}

// WithLookupScope returns ctx with a new, unchecked scope.
func WithLookupScope(ctx context.Context) context.Context {
	return context.WithValue(ctx, lookupScopeKey{}, &LookupScope{})
}

// LookupScopeOf returns the scope of ctx, or nil.
func LookupScopeOf(ctx context.Context) *LookupScope {
	s, _ := ctx.Value(lookupScopeKey{}).(*LookupScope)
	return s
}

// Checked reports whether a lookup in the scope checked the caches: false
// for a nil scope.
func (s *LookupScope) Checked() bool { return s != nil && s.checked }

// MarkChecked records that the caches were checked; a nil scope ignores it.
func (s *LookupScope) MarkChecked() {
	if s != nil {
		s.checked = true
	}
}
