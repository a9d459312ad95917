package admin

import (
	"context"
	"time"
)

// RestKey records that the upstream refused the provider key with id: it
// rests until until, or is rejected until an admin touches its provider
// when until is zero; a touch after version wins. The proxy calls it, off
// the request path; it is not an admin change and is not audited.
func (s *Service) RestKey(ctx context.Context, id, version int64, until time.Time) error {
	return s.db.RestKey(ctx, id, version, until)
}
