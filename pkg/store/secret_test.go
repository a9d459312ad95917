package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// providerKey returns a fresh, recognisable provider key.
func providerKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	rand.Read(b)
	return "sk-proj-" + base64.RawURLEncoding.EncodeToString(b)
}

// secretText returns the base64 text of a new random secret.
func secretText(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// secretFile writes a new secret to a file and returns its path.
func secretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(p, []byte("\n  "+secretText(t)+"  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func addProviderKey(t *testing.T, d *store.DB, host, key string) {
	t.Helper()
	err := d.AddProviderKey(t.Context(), store.ProviderKey{Host: host, DefaultBaseURL: "https://" + host,
		Secret: key, KeyHash: keys.Hash(key), KeyHint: keys.Hint(key)}, t0)
	if err != nil {
		t.Fatalf("AddProviderKey(%s) error = %v", host, err)
	}
}

// wantKeys checks that d hands the proxy exactly want for host.
func wantKeys(t *testing.T, d *store.DB, host string, want ...string) {
	t.Helper()
	p, err := d.ProviderByHost(t.Context(), host)
	if err != nil {
		t.Fatalf("ProviderByHost(%s) error = %v", host, err)
	}
	if diff := cmp.Diff(want, p.Keys); diff != "" {
		t.Errorf("ProviderByHost(%s) keys (-want +got):\n%s", host, diff)
	}
}

// filesHolding returns those of paths whose raw bytes contain secret.
func filesHolding(t *testing.T, secret string, paths ...string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}

func dbFiles(path string) []string { return []string{path, path + "-wal", path + "-shm"} }

// TestSealedAtRest_NoKeyBytesInFiles: once a provider key is added, neither
// the database file, nor its -wal (before any checkpoint), nor a backup
// holds its bytes; the key file beside the database is owner-only, and the
// proxy still gets the key.
func TestSealedAtRest_NoKeyBytesInFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d := openTestStore(t, path)
	if !d.KeyFileCreated() || d.SecretSource() != path+store.KeyFileSuffix {
		t.Errorf("first Open: KeyFileCreated = %v, SecretSource = %q; want true, %q",
			d.KeyFileCreated(), d.SecretSource(), path+store.KeyFileSuffix)
	}
	if fi, err := os.Stat(path + store.KeyFileSuffix); err != nil {
		t.Fatalf("key file: %v", err)
	} else if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", fi.Mode().Perm())
	}
	k1, k2 := providerKey(t), providerKey(t)
	addProviderKey(t, d, "api.openai.com", k1)
	addProviderKey(t, d, "api.groq.com", k2)
	for _, k := range []string{k1, k2} {
		if got := filesHolding(t, k, dbFiles(path)...); len(got) > 0 {
			t.Errorf("provider key found in %v", got)
		}
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("the -wal should hold the writes (size %v, %v)", fi, err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := d.Backup(t.Context(), backup); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{k1, k2} {
		if got := filesHolding(t, k, backup); len(got) > 0 {
			t.Errorf("provider key found in the backup")
		}
	}
	if _, err := os.Stat(backup + store.KeyFileSuffix); err == nil {
		t.Error("Backup copied the key file beside the backup")
	}
	wantKeys(t, d, "api.openai.com", k1)
	wantKeys(t, d, "api.groq.com", k2)
	if d2 := openTestStore(t, path); d2.KeyFileCreated() {
		t.Error("second Open: KeyFileCreated = true, want false")
	}
}

// TestSealed_ReopenWithTheSameSecret: with each source of the secret, a
// store reopened with the same secret hands out the right keys.
func TestSealed_ReopenWithTheSameSecret(t *testing.T) {
	t.Parallel()
	env, file := secretText(t), secretFile(t)
	tests := []struct {
		name   string
		opts   []store.Option
		source string
	}{
		{"default key file", nil, ""},
		{"AIPROXY_SECRET_KEY", []store.Option{store.WithSecretKey(env, "AIPROXY_SECRET_KEY")}, "AIPROXY_SECRET_KEY"},
		{"--secret-key-file", []store.Option{store.WithSecretKeyFile(file)}, file},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "aiproxy.db")
			k1, k2 := providerKey(t), providerKey(t)
			d, err := store.Open(t.Context(), path, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			addProviderKey(t, d, "api.openai.com", k1)
			addProviderKey(t, d, "api.openai.com", k2)
			d.Close()
			d = openTestStore(t, path, tc.opts...)
			wantKeys(t, d, "api.openai.com", k1, k2)
			want := tc.source
			if want == "" {
				want = path + store.KeyFileSuffix
			}
			if got := d.SecretSource(); got != want {
				t.Errorf("SecretSource() = %q, want %q", got, want)
			}
			if tc.opts != nil {
				if _, err := os.Stat(path + store.KeyFileSuffix); err == nil {
					t.Error("a key file was created although a secret was given")
				}
			}
		})
	}
}

// snapshotDir returns every file in dir with its contents.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// TestSealed_WrongSecretRefusesAndChangesNothing: a secret that does not
// open the stored keys fails Open with one line naming where it came from,
// and leaves every file as it was (no key file is created in its place).
func TestSealed_WrongSecretRefusesAndChangesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "aiproxy.db")
	right, wrongFile := secretText(t), secretFile(t)
	k := providerKey(t)
	d, err := store.Open(t.Context(), path, store.WithSecretKey(right, "AIPROXY_SECRET_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	addProviderKey(t, d, "api.openai.com", k)
	d.Close()
	before := snapshotDir(t, dir)

	tests := []struct {
		name string
		opts []store.Option
		want string
	}{
		{"wrong AIPROXY_SECRET_KEY", []store.Option{store.WithSecretKey(secretText(t), "AIPROXY_SECRET_KEY")},
			"cannot unseal provider keys with the secret from AIPROXY_SECRET_KEY: wrong secret?"},
		{"wrong --secret-key-file", []store.Option{store.WithSecretKeyFile(wrongFile)},
			"cannot unseal provider keys with the secret from " + wrongFile + ": wrong secret?"},
		{"no secret, no key file", nil, "provider keys are sealed but their key file " + path + store.KeyFileSuffix + " is missing"},
		{"malformed AIPROXY_SECRET_KEY", []store.Option{store.WithSecretKey("c2hvcnQ=", "AIPROXY_SECRET_KEY")},
			"AIPROXY_SECRET_KEY: secret key decodes to 5 bytes"},
		{"missing --secret-key-file", []store.Option{store.WithSecretKeyFile(filepath.Join(dir, "nope"))},
			"read secret key file " + filepath.Join(dir, "nope")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := store.Open(t.Context(), path, tc.opts...)
			if err == nil {
				d.Close()
				t.Fatalf("Open() succeeded, want %q", tc.want)
			}
			wantCode(t, "Open()", err, aiproxy.EINVALID)
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("Open() error = %q, want one line with %q", msg, tc.want)
			}
			if diff := cmp.Diff(before, snapshotDir(t, dir)); diff != "" {
				t.Errorf("files changed by a refused Open (-before +after):\n%s", diff)
			}
		})
	}

	// A wrong default key file is refused the same way, naming it.
	keyFile := path + store.KeyFileSuffix
	if err := os.WriteFile(keyFile, []byte(secretText(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	before = snapshotDir(t, dir)
	_, err = store.Open(t.Context(), path)
	if want := "cannot unseal provider keys with the secret from " + keyFile + ": wrong secret?"; err == nil || err.Error() != want {
		t.Errorf("Open() with a wrong key file error = %v, want %q", err, want)
	}
	if diff := cmp.Diff(before, snapshotDir(t, dir)); diff != "" {
		t.Errorf("files changed by a refused Open (-before +after):\n%s", diff)
	}
	wantKeys(t, openTestStore(t, path, store.WithSecretKey(right, "AIPROXY_SECRET_KEY")), "api.openai.com", k)
}

// TestSealed_KeyBoundToItsRow: a sealed key copied to another provider's
// row does not open there; the proxy gets an error, never the key.
func TestSealed_KeyBoundToItsRow(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d := openTestStore(t, path)
	ka, kb := providerKey(t), providerKey(t)
	addProviderKey(t, d, "api.openai.com", ka)
	addProviderKey(t, d, "evil.example.com", kb)
	_, err := openRaw(t, path).ExecContext(t.Context(), `UPDATE provider_keys SET secret =
		(SELECT k.secret FROM provider_keys k JOIN providers p ON p.id = k.provider_id WHERE p.host = 'api.openai.com')
		WHERE provider_id = (SELECT id FROM providers WHERE host = 'evil.example.com')`)
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.ProviderByHost(t.Context(), "evil.example.com")
	if err == nil {
		t.Fatalf("ProviderByHost(evil.example.com) = %d keys, want an error: another provider's sealed key opened", len(p.Keys))
	}
	if strings.Contains(err.Error(), ka) {
		t.Errorf("ProviderByHost error %q holds the key", err)
	}
	wantKeys(t, d, "api.openai.com", ka)
}

// TestRekey: after a rekey every key opens with the new secret only; the
// handle that rekeyed goes on working; a default key file is replaced.
func TestRekey(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	t.Run("default key file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "aiproxy.db")
		keyFile := path + store.KeyFileSuffix
		d := openTestStore(t, path)
		k1, k2 := providerKey(t), providerKey(t)
		addProviderKey(t, d, "api.openai.com", k1)
		addProviderKey(t, d, "api.groq.com", k2)
		wantKeys(t, d, "api.openai.com", k1) // cached under the old secret
		old, err := os.ReadFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		next := secretFile(t)
		if err := d.Rekey(ctx, next); err != nil {
			t.Fatalf("Rekey() error = %v", err)
		}
		newText, _ := os.ReadFile(next)
		if got, _ := os.ReadFile(keyFile); string(got) != strings.TrimSpace(string(newText))+"\n" {
			t.Errorf("key file after Rekey = %q, want the new secret %q", got, strings.TrimSpace(string(newText)))
		}
		if _, err := os.Stat(keyFile + ".new"); err == nil {
			t.Error("Rekey left " + keyFile + ".new")
		}
		if fi, err := os.Stat(keyFile); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode after Rekey = %#o, want 0600", fi.Mode().Perm())
		}
		wantKeys(t, d, "api.openai.com", k1)
		k3 := providerKey(t)
		addProviderKey(t, d, "api.openai.com", k3)

		_, err = store.Open(ctx, path, store.WithSecretKey(string(old), "the old key file"))
		wantCode(t, "Open() with the old secret", err, aiproxy.EINVALID)
		wantKeys(t, openTestStore(t, path), "api.openai.com", k1, k3)
		wantKeys(t, openTestStore(t, path, store.WithSecretKeyFile(next)), "api.groq.com", k2)
	})
	t.Run("AIPROXY_SECRET_KEY", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "aiproxy.db")
		env := store.WithSecretKey(secretText(t), "AIPROXY_SECRET_KEY")
		d := openTestStore(t, path, env)
		k := providerKey(t)
		addProviderKey(t, d, "api.openai.com", k)
		stale := openTestStore(t, path, env) // a CLI command that opened before the rekey
		next := secretFile(t)
		if err := d.Rekey(ctx, next); err != nil {
			t.Fatalf("Rekey() error = %v", err)
		}
		if got := d.SecretSource(); got != next {
			t.Errorf("SecretSource() after Rekey = %q, want %q", got, next)
		}
		if _, err := os.Stat(path + store.KeyFileSuffix); err == nil {
			t.Error("Rekey created a key file although the secret came from AIPROXY_SECRET_KEY")
		}
		_, err := store.Open(ctx, path, env)
		wantCode(t, "Open() with the old secret", err, aiproxy.EINVALID)
		wantKeys(t, openTestStore(t, path, store.WithSecretKeyFile(next)), "api.openai.com", k)

		// The stale handle never seals a key under the old secret, and
		// cannot become the serve.
		err = stale.AddProviderKey(ctx, store.ProviderKey{Host: "api.openai.com", Secret: "sk-x", KeyHash: keys.Hash("sk-x"), KeyHint: "sk-…"}, t0)
		wantCode(t, "AddProviderKey() through a handle opened before the rekey", err, aiproxy.EINVALID)
		_, err = stale.ClaimServer()
		wantCode(t, "ClaimServer() through a handle opened before the rekey", err, aiproxy.EINVALID)
	})
	t.Run("refused while serve runs", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "aiproxy.db")
		serve, cli := openTestStore(t, path), openTestStore(t, path)
		k := providerKey(t)
		addProviderKey(t, cli, "api.openai.com", k)
		release, err := serve.ClaimServer()
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		before := snapshotDir(t, filepath.Dir(path))
		delete(before, filepath.Base(path)+"-shm")
		err = cli.Rekey(ctx, secretFile(t))
		wantCode(t, "Rekey() while serve runs", err, aiproxy.ECONFLICT)
		after := snapshotDir(t, filepath.Dir(path))
		delete(after, filepath.Base(path)+"-shm")
		if diff := cmp.Diff(before, after); diff != "" {
			t.Errorf("refused Rekey changed files (-before +after):\n%s", diff)
		}
		wantKeys(t, serve, "api.openai.com", k)
	})
	t.Run("bad new secret", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "aiproxy.db")
		d := openTestStore(t, path)
		k := providerKey(t)
		addProviderKey(t, d, "api.openai.com", k)
		bad := filepath.Join(t.TempDir(), "bad.key")
		os.WriteFile(bad, []byte("not a secret"), 0o600)
		wantCode(t, "Rekey(not base64)", d.Rekey(ctx, bad), aiproxy.EINVALID)
		wantCode(t, "Rekey(missing file)", d.Rekey(ctx, bad+".missing"), aiproxy.EINVALID)
		wantKeys(t, openTestStore(t, path), "api.openai.com", k)
	})
}

// TestRekey_InterruptedIsFinishedOrUndone: a rekey that stopped after its
// commit but before replacing the default key file (the new secret still
// in KeyFile.new) is finished by the next Open; one that stopped before its
// commit leaves the old secret working and its .new file is removed.
func TestRekey_InterruptedIsFinishedOrUndone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	keyFile := path + store.KeyFileSuffix
	d, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	k := providerKey(t)
	addProviderKey(t, d, "api.openai.com", k)
	old, _ := os.ReadFile(keyFile)
	next := secretFile(t)
	if err := d.Rekey(ctx, next); err != nil {
		t.Fatal(err)
	}
	d.Close()
	newText, _ := os.ReadFile(keyFile)

	// After the commit, before the rename: the old file, the new one beside it.
	os.WriteFile(keyFile, old, 0o600)
	os.WriteFile(keyFile+".new", newText, 0o600)
	wantKeys(t, openTestStore(t, path), "api.openai.com", k)
	if got, _ := os.ReadFile(keyFile); !bytes.Equal(got, newText) {
		t.Error("Open did not finish the interrupted rekey: the key file still holds the old secret")
	}
	if _, err := os.Stat(keyFile + ".new"); err == nil {
		t.Error("Open left the .new key file after finishing the rekey")
	}

	// Before the commit: the current file is right, the .new one is not.
	os.WriteFile(keyFile+".new", []byte(secretText(t)), 0o600)
	wantKeys(t, openTestStore(t, path), "api.openai.com", k)
	if got, _ := os.ReadFile(keyFile); !bytes.Equal(got, newText) {
		t.Error("Open replaced a working key file with the .new file of a rekey that did not commit")
	}
	if _, err := os.Stat(keyFile + ".new"); err == nil {
		t.Error("Open left the .new key file of a rekey that did not commit")
	}
}

// TestOpen_SealsClearKeysOfAnOlderVersion: a database where an older
// aiproxy stored provider keys in clear (schema before 0003; one key also
// deleted, its bytes left in a free page) is sealed in place on first
// open: the keys still work, and their clear bytes are gone from the
// database file and its -wal, the deleted one's too.
func TestOpen_SealsClearKeysOfAnOlderVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	k1, k2, gone := providerKey(t), providerKey(t), providerKey(t)
	raw := openRaw(t, path)
	for _, q := range []string{
		// Only 0003 is forgotten: the later migrations' tables and columns
		// stay, and re-running them would fail.
		"DELETE FROM schema_migrations WHERE name = '0003_sealed_provider_keys.sql'",
		"INSERT INTO providers (id, host, base_url, inject_usage, created_at) VALUES (1, 'api.openai.com', 'https://api.openai.com', 1, 0)",
		"INSERT INTO providers (id, host, base_url, inject_usage, created_at) VALUES (2, 'api.groq.com', 'https://api.groq.com/openai', 1, 0)",
		"INSERT INTO provider_keys (provider_id, secret, key_hash, key_hint, created_at) VALUES (1, '" + k1 + "', '" + keys.Hash(k1) + "', 'sk-…1', 0)",
		"INSERT INTO provider_keys (provider_id, secret, key_hash, key_hint, created_at) VALUES (1, '" + gone + "', '" + keys.Hash(gone) + "', 'sk-…3', 0)",
		"INSERT INTO provider_keys (provider_id, secret, key_hash, key_hint, created_at) VALUES (2, '" + k2 + "', '" + keys.Hash(k2) + "', 'sk-…2', 0)",
		"DELETE FROM provider_keys WHERE secret = '" + gone + "'",
		"PRAGMA wal_checkpoint(TRUNCATE)",
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("build an old database: %s: %v", q, err)
		}
	}
	raw.Close()
	for _, k := range []string{k1, k2, gone} {
		if len(filesHolding(t, k, dbFiles(path)...)) == 0 {
			t.Fatal("the old database should hold its keys in clear")
		}
	}

	d = openTestStore(t, path)
	wantKeys(t, d, "api.openai.com", k1)
	wantKeys(t, d, "api.groq.com", k2)
	for name, k := range map[string]string{"k1": k1, "k2": k2, "deleted key": gone} {
		if got := filesHolding(t, k, dbFiles(path)...); len(got) > 0 {
			t.Errorf("%s still in clear in %v after the upgrade", name, got)
		}
	}
	var n int
	if err := openRaw(t, path).QueryRowContext(ctx,
		"SELECT COUNT(*) FROM provider_keys WHERE typeof(secret) <> 'blob'").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d keys left unsealed (%v), want 0", n, err)
	}
	d.Close()
	for _, k := range []string{k1, k2, gone} {
		if got := filesHolding(t, k, dbFiles(path)...); len(got) > 0 {
			t.Errorf("a key is in clear in %v after close", got)
		}
	}
	wantKeys(t, openTestStore(t, path), "api.openai.com", k1)
}

// TestOpen_ConcurrentFirstOpenSharesOneKeyFile: processes that open a new
// database at the same time end up with one key file and one secret.
func TestOpen_ConcurrentFirstOpenSharesOneKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	const n = 4
	ds := make(chan *store.DB, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			d, err := store.Open(context.Background(), path)
			if err != nil {
				errs <- err
				return
			}
			ds <- d
		}()
	}
	var opened []*store.DB
	deadline := time.After(30 * time.Second)
	for len(opened) < n {
		select {
		case d := <-ds:
			t.Cleanup(func() { d.Close() })
			opened = append(opened, d)
		case err := <-errs:
			t.Fatalf("concurrent first Open() error = %v", err)
		case <-deadline:
			t.Fatal("concurrent first Opens did not finish in 30 s")
		}
	}
	k := providerKey(t)
	addProviderKey(t, opened[0], "api.openai.com", k)
	for _, d := range opened[1:] {
		wantKeys(t, d, "api.openai.com", k)
	}
}
