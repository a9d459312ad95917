package cmd

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// TestRekeyCmd_ReplacesTheDefaultKeyFile: `rekey --new-secret-key-file`
// re-seals the keys, the default key file then holds the new secret, and
// the stored key still opens; stdout stays empty. It builds the command
// itself, on a store opened beforehand, so it runs before rekey is added to
// the root and never reaches a default database path.
func TestRekeyCmd_ReplacesTheDefaultKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "aiproxy.db")
	d, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	const key = "sk-upstream-rekey-test-0123456789"
	if err := d.AddProviderKey(t.Context(), store.ProviderKey{Host: "api.openai.com", DefaultBaseURL: "https://api.openai.com",
		Secret: key, KeyHash: keys.Hash(key), KeyHint: keys.Hint(key)}, time.Now()); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	newFile := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(newFile, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var out, errOut bytes.Buffer
	app := &appContext{v: viper.New(), streams: Streams{In: strings.NewReader(""), Out: &out, Err: &errOut}}
	// The store is open already, on the temporary file: service() opens
	// nothing, so no configured or default database is ever touched.
	app.db = d
	app.once.Do(func() {})
	defer app.close()
	c := newRekeyCmd(app)
	c.SetArgs([]string{"--new-secret-key-file", newFile})
	c.SetOut(&out)
	c.SetErr(&errOut)
	if err := c.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("rekey error = %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("rekey stdout = %q, want nothing", out.String())
	}
	if !strings.Contains(errOut.String(), path+store.KeyFileSuffix) {
		t.Errorf("rekey stderr = %q, want it to name the key file", errOut.String())
	}
	got, _ := os.ReadFile(path + store.KeyFileSuffix)
	want, _ := os.ReadFile(newFile)
	if string(got) != string(want) {
		t.Errorf("key file after rekey = %q, want the new secret", got)
	}
	d, err = store.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open after rekey: %v", err)
	}
	defer d.Close()
	p, err := d.ProviderByHost(t.Context(), "api.openai.com")
	if err != nil || len(p.Keys) != 1 || p.Keys[0] != key {
		t.Errorf("ProviderByHost after rekey: %d keys, %v; want the stored key", len(p.Keys), err)
	}
}

// A lost secret is not the end: `rekey --forget-provider-keys` deletes the
// provider keys it can no longer open and keeps everything else (users,
// providers' settings); a new key file is made and keys added again work.
func TestRekeyCmd_ForgetProviderKeysAfterALostSecret(t *testing.T) {
	db := filepath.Join(t.TempDir(), "aiproxy.db")
	runOK(t, "--db", db, "provider", "add", "api.groq.com", "gsk_lost_secret_key_0123456789", "--alias", "groq")
	key := strings.TrimSpace(runOK(t, "--db", db, "user", "create", "alice"))
	if err := os.Remove(db + store.KeyFileSuffix); err != nil { // the secret is lost
		t.Fatal(err)
	}
	checkFailed(t, run(t, "", "--db", db, "user", "list"), "")
	r := run(t, "", "--db", db, "rekey", "--forget-provider-keys")
	if r.Code != 0 || !strings.Contains(r.Err, "1 provider keys forgotten") {
		t.Fatalf("rekey --forget-provider-keys: exit %d, stderr %q", r.Code, r.Err)
	}
	if out := runOK(t, "--db", db, "user", "list", "--json"); !strings.Contains(out, `"alice"`) {
		t.Errorf("users after forgetting the keys: %s", out)
	}
	runOK(t, "--db", db, "provider", "add", "api.groq.com", "gsk_new_key_after_loss_0123456")
	out := runOK(t, "--db", db, "provider", "list", "--json")
	if !strings.Contains(out, `"alias": "groq"`) || !strings.Contains(out, `"keys": 1`) {
		t.Errorf("provider after adding the key again: %s", out)
	}
	_ = key
}
