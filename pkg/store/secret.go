package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/seal"
)

// Provider keys are sealed at rest (CONTRACT section 4): provider_keys.secret
// holds seal.Key.Seal(key, keyAD(host, id)), so a database file, its -wal or
// a backup alone reveals no key, and a sealed key copied to another provider
// or row does not open there. The store seals on write and unseals when it
// loads a provider into its cache, never per request.
//
// The secret comes from WithSecretKey or WithSecretKeyFile, else from the
// default key file: the database's real path + KeyFileSuffix, created (0600)
// on first use. A new key file is never created while sealed keys exist:
// they would be orphaned.

// KeyFileSuffix makes the name of the default key file from the database's
// real path (symbolic links resolved): aiproxy.db → aiproxy.db.key.
const KeyFileSuffix = ".key"

// secretSource is where Open takes the secret from.
type secretSource struct {
	text []byte // WithSecretKey
	name string // how messages name text's source
	file string // WithSecretKeyFile
}

// WithSecretKey makes Open seal provider keys with the secret whose base64
// text is text (AIPROXY_SECRET_KEY); source names it in error messages,
// e.g. "AIPROXY_SECRET_KEY". An empty text is an error.
func WithSecretKey(text, source string) Option {
	return func(o *options) { o.secret = secretSource{text: []byte(text), name: source} }
}

// WithSecretKeyFile makes Open seal provider keys with the secret whose
// base64 text is in the file at path (--secret-key-file); whitespace around
// it is ignored. The file is only read, never created or changed.
func WithSecretKeyFile(path string) Option {
	return func(o *options) { o.secret = secretSource{file: path} }
}

// sealer is the secret in use and where it came from.
type sealer struct {
	key  *seal.Key
	name string // for messages: "AIPROXY_SECRET_KEY" or a file's path
	// keyFile is the default key file when the secret is in it, else "".
	keyFile string
	created bool // this Open created keyFile
}

// SecretSource names where the secret that seals provider keys came from:
// the source given to WithSecretKey, or a key file's path. serve names it
// in its first log line.
func (d *DB) SecretSource() string { return d.sealer.Load().name }

// KeyFileCreated reports whether Open created the default key file, that
// is, whether this was the first use of the database without a secret.
func (d *DB) KeyFileCreated() bool { return d.sealer.Load().created }

// keyAD is the associated data that binds a sealed key to its provider's
// host and its row: moved to another provider or row, it does not open.
func keyAD(host string, id int64) []byte {
	return []byte("aiproxy provider key\x00" + host + "\x00" + strconv.FormatInt(id, 10))
}

// errWrongSecret is what checkSecret returns when the secret does not open
// the stored keys.
var errWrongSecret = errors.New("wrong secret")

func wrongSecret(name string) error {
	return aiproxy.Errorf(aiproxy.EINVALID, "cannot unseal provider keys with the secret from %s: wrong secret?", name)
}

// checkSecret reports errWrongSecret when key does not open the first
// sealed key stored, and nil when it does or none is stored. It runs in
// the write transactions that seal, so that a key is never sealed under
// a secret other than the stored keys' (a rekey committed meanwhile).
func checkSecret(ctx context.Context, q queryer, key *seal.Key) error {
	rows, err := q.QueryContext(ctx, `SELECT k.id, p.host, k.secret
		FROM provider_keys k JOIN providers p ON p.id = k.provider_id
		WHERE typeof(k.secret) = 'blob' ORDER BY k.id LIMIT 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		return rows.Err()
	}
	var id int64
	var host string
	var sealed []byte
	if err := rows.Scan(&id, &host, &sealed); err != nil {
		return err
	}
	if _, err := key.Open(sealed, keyAD(host, id)); err != nil {
		return errWrongSecret
	}
	return nil
}

// sealedKeysExist reports whether any provider key is stored sealed.
func sealedKeysExist(ctx context.Context, q queryer) (bool, error) {
	rows, err := q.QueryContext(ctx, "SELECT 1 FROM provider_keys WHERE typeof(secret) = 'blob' LIMIT 1")
	if err != nil {
		return false, err
	}
	defer rows.Close()
	return rows.Next(), rows.Err()
}

// openSecret finds the secret, checks it against the stored keys, and seals
// the keys an older aiproxy stored in clear. A wrong secret changes nothing.
func (d *DB) openSecret(ctx context.Context, src secretSource) error {
	var s *sealer
	var err error
	switch {
	case src.text != nil:
		s = &sealer{name: src.name}
		if s.key, err = seal.ParseKey(src.text); err != nil {
			return aiproxy.Errorf(aiproxy.EINVALID, "%s: %v", src.name, err)
		}
	case src.file != "":
		s = &sealer{name: src.file}
		if s.key, err = readKeyFile(src.file); err != nil {
			return err
		}
	default:
		if s, err = d.openKeyFile(ctx); err != nil {
			return err
		}
	}
	if s.keyFile == "" { // openKeyFile has checked its own
		if err := checkSecret(ctx, d.sql, s.key); errors.Is(err, errWrongSecret) {
			return wrongSecret(s.name)
		} else if err != nil {
			return err
		}
	}
	d.sealer.Store(s)
	return d.sealClearKeys(ctx)
}

// readKeyFile reads the secret's base64 text from path.
func readKeyFile(path string) (*seal.Key, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "read secret key file %s: %v", path, unwrapPathError(err))
	}
	k, err := seal.ParseKey(text)
	if err != nil {
		return nil, aiproxy.Errorf(aiproxy.EINVALID, "secret key file %s: %v", path, err)
	}
	return k, nil
}

// openKeyFile reads the default key file, creating it when no sealed key
// exists. It finishes a rekey that stopped between its commit and the
// replacement of the file (see Rekey), and removes what one that stopped
// before its commit left.
func (d *DB) openKeyFile(ctx context.Context) (*sealer, error) {
	file := d.real + KeyFileSuffix
	pending := file + ".new"
	for {
		key, err := readKeyFile(file)
		if err == nil {
			tightenKeyFile(file, d)
			s := &sealer{key: key, name: file, keyFile: file}
			err := checkSecret(ctx, d.sql, key)
			if errors.Is(err, errWrongSecret) {
				next, perr := readKeyFile(pending)
				if perr != nil || checkSecret(ctx, d.sql, next) != nil {
					return nil, wrongSecret(file)
				}
				if err := replaceFile(pending, file); err != nil {
					return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "finish an interrupted rekey: %v", err)
				}
				d.log.Warn("finished an interrupted rekey: the key file now holds the new secret", "key_file", file)
				s.key = next
				return s, nil
			}
			if err != nil {
				return nil, err
			}
			if rerr := os.Remove(pending); rerr == nil {
				d.log.Warn("removed the new key file of a rekey that did not commit", "key_file", pending)
			}
			return s, nil
		}
		if _, serr := os.Lstat(file); !errors.Is(serr, fs.ErrNotExist) {
			return nil, err // unreadable or not base64: never replaced
		}
		sealed, err := sealedKeysExist(ctx, d.sql)
		if err != nil {
			return nil, err
		}
		if sealed {
			return nil, aiproxy.Errorf(aiproxy.EINVALID,
				"provider keys are sealed but their key file %s is missing: restore it, or give their secret "+
					"with AIPROXY_SECRET_KEY or --secret-key-file (a new key file would orphan them)", file)
		}
		created, err := createKeyFile(file)
		if err != nil {
			return nil, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "create key file %s: %v", file, err)
		}
		if created {
			key, err := readKeyFile(file)
			if err != nil {
				return nil, err
			}
			return &sealer{key: key, name: file, keyFile: file, created: true}, nil
		}
		// Another process created it first: read theirs.
	}
}

// createKeyFile writes a new random secret to path, complete or not at all:
// into a temporary file first, then linked to path, which fails if path
// exists. It reports false when another process created path first.
func createKeyFile(path string) (bool, error) {
	text, err := seal.NewKeyText()
	if err != nil {
		return false, err
	}
	tmp, err := writeTemp(path, []byte(text))
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		// A file system without hard links (FAT, some network ones): an
		// exclusive create, which a concurrent first open may read half
		// written and then fail once.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		if err != nil {
			return false, unwrapPathError(err)
		}
		_, err = f.WriteString(text)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return false, unwrapPathError(err)
		}
	}
	return true, syncDir(filepath.Dir(path))
}

// writeTemp writes data to a new owner-only file beside path, synced, and
// returns its name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", unwrapPathError(err)
	}
	name := f.Name()
	err = f.Chmod(0o600)
	if runtime.GOOS == "windows" {
		err = nil // no Unix modes; CreateTemp's file is private to its owner already
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", unwrapPathError(err)
	}
	return name, nil
}

// replaceFile renames from over to and makes the rename durable.
func replaceFile(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return unwrapPathError(err)
	}
	return syncDir(filepath.Dir(to))
}

// syncDir makes a new name in dir durable. Windows cannot sync a folder,
// and its renames need no such step.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return unwrapPathError(err)
	}
	defer f.Close()
	return f.Sync()
}

// tightenKeyFile makes the default key file owner-only, like the database.
func tightenKeyFile(path string, d *DB) {
	if runtime.GOOS == "windows" {
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, fi.Mode().Perm()&0o700); err != nil {
			d.log.Warn("key file is readable by others and its mode cannot be changed", "file", path, "err", unwrapPathError(err))
			return
		}
		d.log.Warn("key file was readable by others: mode tightened", "file", path, "was", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
}

// sealClearKeys seals, in one transaction, the provider keys that an older
// aiproxy stored in clear, then scrubs their clear bytes from the files.
func (d *DB) sealClearKeys(ctx context.Context) error {
	var n int
	if err := d.sql.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM provider_keys WHERE typeof(secret) <> 'blob'").Scan(&n); err != nil || n == 0 {
		return err
	}
	s := d.sealer.Load()
	return d.resealScrubbed(ctx, func(tx *sql.Tx) error {
		if err := checkSecret(ctx, tx, s.key); errors.Is(err, errWrongSecret) {
			return wrongSecret(s.name)
		} else if err != nil {
			return err
		}
		keys, err := readKeys(ctx, tx, "WHERE typeof(k.secret) <> 'blob'")
		if err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, "UPDATE provider_keys SET secret = ? WHERE id = ?",
				s.key.Seal(k.secret, keyAD(k.host, k.id)), k.id); err != nil {
				return err
			}
		}
		if len(keys) > 0 {
			d.log.Info("sealed the provider keys that an older aiproxy stored in clear", "keys", len(keys), "secret_from", s.name)
		}
		return nil
	}, nil)
}

// storedKey is one provider_keys row as stored.
type storedKey struct {
	id     int64
	host   string
	secret []byte
}

func readKeys(ctx context.Context, tx *sql.Tx, where string) ([]storedKey, error) {
	rows, err := tx.QueryContext(ctx, `SELECT k.id, p.host, k.secret
		FROM provider_keys k JOIN providers p ON p.id = k.provider_id `+where+` ORDER BY k.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedKey
	for rows.Next() {
		var k storedKey
		if err := rows.Scan(&k.id, &k.host, &k.secret); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// resealScrubbed runs fn in one immediate transaction with secure_delete
// on, so that the pages it rewrites keep no old bytes, then scrubs the rest
// of the files: VACUUM rewrites the database (free pages that older deletes
// left hold old bytes too), and wal_checkpoint(TRUNCATE) copies the result
// over the main file and empties the -wal. A failure after the commit is
// only logged: the keys are sealed, a later checkpoint finishes the job.
//
// committed, when not nil, runs right after the commit, before the scrub.
//
// On PostgreSQL it is one write transaction: old row versions are the
// server's to vacuum, and its files are not aiproxy's to scrub.
func (d *DB) resealScrubbed(ctx context.Context, fn func(tx *sql.Tx) error, committed func()) error {
	if d.pg {
		err := d.writeTx(ctx, fn)
		if err == nil && committed != nil {
			committed()
		}
		return err
	}
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA secure_delete = ON"); err != nil {
		return err
	}
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA secure_delete = OFF"); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn }) // never back to the pool with it on
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return dbError(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return dbError(err)
	}
	if err := tx.Commit(); err != nil {
		return dbError(err)
	}
	if committed != nil {
		committed()
	}
	if _, err := conn.ExecContext(ctx, "VACUUM"); err != nil {
		d.log.Warn("scrub old provider key bytes: vacuum", "err", err)
	}
	var busy, frames, copied int
	err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &copied)
	if err != nil || busy != 0 {
		d.log.Warn("scrub old provider key bytes: the -wal could not be emptied now (a reader was busy); a later checkpoint will",
			"err", err)
	}
	return nil
}

// Rekey re-seals every provider key under the secret in newSecretKeyFile,
// in one transaction: a crash before the commit leaves the old secret in
// force, after it the new one. When the secret is in the default key file,
// that file is replaced too: the new secret is written beside it first
// (KeyFile + ".new") and renamed over it after the commit, and Open
// finishes a rename that a crash interrupted. Otherwise the caller must
// give the new secret from now on.
//
// Rekey refuses to run (ECONFLICT) while a serve holds the database, which
// would keep the old secret; it returns EINVALID for an unreadable new
// secret, or when the current secret no longer opens the stored keys.
func (d *DB) Rekey(ctx context.Context, newSecretKeyFile string) error {
	next, err := readKeyFile(newSecretKeyFile)
	if err != nil {
		return err
	}
	var release func()
	if d.pg {
		release, err = d.pgLockServe(ctx, false)
	} else {
		release, err = lockServer(d.real+".lock", d.path)
	}
	if aiproxy.ErrorCode(err) == aiproxy.ECONFLICT {
		return aiproxy.Errorf(aiproxy.ECONFLICT, "aiproxy serve is running on %s: stop it before rekey, it holds the old secret", d.path)
	}
	if err != nil {
		return err
	}
	defer release()

	cur := d.sealer.Load()
	pending := ""
	if cur.keyFile != "" {
		text, err := os.ReadFile(newSecretKeyFile)
		if err != nil {
			return aiproxy.Errorf(aiproxy.EINVALID, "read secret key file %s: %v", newSecretKeyFile, unwrapPathError(err))
		}
		tmp, err := writeTemp(cur.keyFile, []byte(strings.TrimSpace(string(text))+"\n"))
		if err != nil {
			return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "write new key file: %v", err)
		}
		pending = cur.keyFile + ".new"
		if err := replaceFile(tmp, pending); err != nil {
			os.Remove(tmp)
			return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "write new key file: %v", err)
		}
	}
	s := &sealer{key: next, name: newSecretKeyFile}
	var renameErr error
	err = d.resealScrubbed(ctx, func(tx *sql.Tx) error {
		keys, err := readKeys(ctx, tx, "")
		if err != nil {
			return err
		}
		for _, k := range keys {
			ad := keyAD(k.host, k.id)
			plain, err := cur.key.Open(k.secret, ad)
			if err != nil {
				return wrongSecret(cur.name)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE provider_keys SET secret = ? WHERE id = ?", next.Seal(plain, ad), k.id); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		// Committed: from here on only the new secret opens the keys.
		if pending != "" {
			s.name, s.keyFile = cur.keyFile, cur.keyFile
			renameErr = replaceFile(pending, cur.keyFile)
		}
		d.sealer.Store(s)
	})
	if err != nil {
		if pending != "" {
			os.Remove(pending)
		}
		return err
	}
	if renameErr != nil {
		// The next Open finds the new secret in KeyFile + ".new" and
		// finishes the rename.
		return aiproxy.Errorf(aiproxy.EUNAVAILABLE, "keys re-sealed, but the key file %s could not be replaced (%v): "+
			"the next command will retry", cur.keyFile, renameErr)
	}
	return nil
}
