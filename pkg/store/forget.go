package store

import (
	"context"
	"database/sql"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// WithForgottenProviderKeys makes Open delete every stored provider key
// before it looks at the secret: the way back when the secret that sealed
// them is lost (CONTRACT section 4). Users, providers and their settings,
// limits, prices, usage and the audit log stay; the keys must be added
// again. Open refuses while a serve holds the database, which would go on
// using the keys it holds.
func WithForgottenProviderKeys() Option {
	return func(o *options) { o.forget = true }
}

// forgetProviderKeys deletes every provider key, in one transaction,
// recording how many in forgotten.
func (d *DB) forgetProviderKeys(ctx context.Context) error {
	var release func()
	var err error
	if d.pg {
		release, err = d.pgLockServe(ctx, false)
	} else {
		release, err = lockServer(d.real+".lock", d.path)
	}
	if aiproxy.ErrorCode(err) == aiproxy.ECONFLICT {
		return aiproxy.Errorf(aiproxy.ECONFLICT, "aiproxy serve is running on %s: stop it before forgetting the provider keys", d.path)
	}
	if err != nil {
		return err
	}
	defer release()
	return d.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM provider_keys")
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		d.forgotten = n
		return err
	})
}

// Forgotten is how many provider keys Open deleted for
// WithForgottenProviderKeys.
func (d *DB) Forgotten() int64 { return d.forgotten }
