package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// CreateUser stores a new user with the hash and hint of its key.
// It returns ECONFLICT if the name is taken.
func (d *DB) CreateUser(ctx context.Context, name, keyHash, keyHint string, createdAt time.Time, expiresAt *time.Time) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			"INSERT INTO users (name, key_hash, key_hint, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
			name, keyHash, keyHint, ms(createdAt), nullMS(expiresAt))
		if isUnique(err) {
			return aiproxy.Errorf(aiproxy.ECONFLICT, "user %s already exists", name)
		}
		return err
	})
}

// ResetUserKey gives user name a new key hash and hint; the old key stops
// working with this commit. With setExpiry the expiry becomes expiresAt
// (nil: never), otherwise it is kept. It returns ENOTFOUND for a missing user.
func (d *DB) ResetUserKey(ctx context.Context, name, keyHash, keyHint string, setExpiry bool, expiresAt *time.Time) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		q := "UPDATE users SET key_hash = ?, key_hint = ? WHERE name = ?"
		args := []any{keyHash, keyHint, name}
		if setExpiry {
			q = "UPDATE users SET key_hash = ?, key_hint = ?, expires_at = ? WHERE name = ?"
			args = []any{keyHash, keyHint, nullMS(expiresAt), name}
		}
		return expectOne(tx.ExecContext(ctx, q, args...))(aiproxy.Errorf(aiproxy.ENOTFOUND, "user %s not found", name))
	})
}

// ReplaceUserKey swaps the key whose hash is oldHash for a new one, for a
// user resetting their own key. Of several concurrent calls with the same old
// key exactly one succeeds; the others get EUNAUTHORIZED.
func (d *DB) ReplaceUserKey(ctx context.Context, oldHash, newHash, newHint string) (aiproxy.User, error) {
	var u aiproxy.User
	err := d.write(ctx, func(tx *sql.Tx) error {
		row := tx.QueryRowContext(ctx,
			"UPDATE users SET key_hash = ?, key_hint = ? WHERE key_hash = ? RETURNING "+userColumns,
			newHash, newHint, oldHash)
		var err error
		u, err = scanUser(row)
		if errors.Is(err, sql.ErrNoRows) {
			return aiproxy.InvalidKey()
		}
		return err
	})
	return u, err
}

// SetUserExpiry changes when user name's key expires; nil means never.
// It returns ENOTFOUND for a missing user.
func (d *DB) SetUserExpiry(ctx context.Context, name string, expiresAt *time.Time) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		return expectOne(tx.ExecContext(ctx, "UPDATE users SET expires_at = ? WHERE name = ?", nullMS(expiresAt), name))(
			aiproxy.Errorf(aiproxy.ENOTFOUND, "user %s not found", name))
	})
}

// DeleteUser removes user name; its key stops working with this commit.
// Its usage records stay, under its name. It returns ENOTFOUND for a missing user.
func (d *DB) DeleteUser(ctx context.Context, name string) error {
	return d.write(ctx, func(tx *sql.Tx) error {
		return expectOne(tx.ExecContext(ctx, "DELETE FROM users WHERE name = ?", name))(
			aiproxy.Errorf(aiproxy.ENOTFOUND, "user %s not found", name))
	})
}

const userColumns = "id, name, key_hint, created_at, expires_at"

type scanner interface{ Scan(dest ...any) error }

func scanUser(s scanner) (aiproxy.User, error) {
	var u aiproxy.User
	var created int64
	var expires sql.NullInt64
	if err := s.Scan(&u.ID, &u.Name, &u.KeyHint, &created, &expires); err != nil {
		return u, err
	}
	u.CreatedAt = fromMS(created)
	u.ExpiresAt = fromNullMS(expires)
	return u, nil
}

// UserByKeyHash returns the user whose key hashes to keyHash, or
// EUNAUTHORIZED. The lookup uses the unique index on key_hash.
func (d *DB) UserByKeyHash(ctx context.Context, keyHash string) (aiproxy.User, error) {
	u, err := d.cache.user(ctx, keyHash, func() (aiproxy.User, error) { return d.userByKeyHash(ctx, keyHash) })
	return u, dbError(err)
}

func (d *DB) userByKeyHash(ctx context.Context, keyHash string) (aiproxy.User, error) {
	u, err := scanUser(d.userByKeyHashStmt.QueryRowContext(ctx, keyHash))
	if errors.Is(err, sql.ErrNoRows) {
		return u, aiproxy.InvalidKey()
	}
	return u, dbError(err)
}

// UserByName returns user name, or ENOTFOUND.
func (d *DB) UserByName(ctx context.Context, name string) (aiproxy.User, error) {
	u, err := scanUser(d.sql.QueryRowContext(ctx, "SELECT "+userColumns+" FROM users WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return u, aiproxy.Errorf(aiproxy.ENOTFOUND, "user %s not found", name)
	}
	return u, dbError(err)
}

// ListUsers returns every user by name, with last use and request count
// from the usage records.
func (d *DB) ListUsers(ctx context.Context) ([]aiproxy.User, error) {
	rows, err := d.sql.QueryContext(ctx, `
		SELECT u.id, u.name, u.key_hint, u.created_at, u.expires_at,
		       (SELECT MAX(ts) FROM usage WHERE user_id = u.id),
		       (SELECT COUNT(*) FROM usage WHERE user_id = u.id)
		FROM users u ORDER BY u.name`)
	if err != nil {
		return nil, dbError(err)
	}
	defer rows.Close()
	users := []aiproxy.User{}
	for rows.Next() {
		var u aiproxy.User
		var created int64
		var expires, last sql.NullInt64
		if err := rows.Scan(&u.ID, &u.Name, &u.KeyHint, &created, &expires, &last, &u.Requests); err != nil {
			return nil, err
		}
		u.CreatedAt = fromMS(created)
		u.ExpiresAt = fromNullMS(expires)
		u.LastUsedAt = fromNullMS(last)
		users = append(users, u)
	}
	return users, dbError(rows.Err())
}

// expectOne turns an Exec result that touched no row into notFound.
func expectOne(res sql.Result, err error) func(notFound error) error {
	return func(notFound error) error {
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return notFound
		}
		return nil
	}
}
