package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/keys"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// listUsers runs `user list --json` and decodes it.
func listUsers(t *testing.T, db string) []aiproxy.User {
	t.Helper()
	var users []aiproxy.User
	if err := json.Unmarshal([]byte(runOK(t, "--db", db, "user", "list", "--json")), &users); err != nil {
		t.Fatalf("user list --json: %v", err)
	}
	return users
}

func userByName(t *testing.T, db, name string) aiproxy.User {
	t.Helper()
	for _, u := range listUsers(t, db) {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("user %q not in user list", name)
	return aiproxy.User{}
}

// createKey runs `user create` and checks that it printed one key alone.
func createKey(t *testing.T, db string, args ...string) string {
	t.Helper()
	out := runOK(t, append([]string{"--db", db, "user", "create"}, args...)...)
	key := strings.TrimSuffix(out, "\n")
	if !keys.Valid(key) || strings.Count(out, "\n") != 1 {
		t.Fatalf("user create %v printed %q, want one sk-cfw key alone on one line", args, out)
	}
	return key
}

func TestUserCreate(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	before := time.Now().UTC().Truncate(time.Millisecond)
	key := createKey(t, db, "alice")
	after := time.Now().UTC()

	u := userByName(t, db, "alice")
	if u.KeyHint != keys.Hint(key) {
		t.Errorf("key_hint = %q, want %q", u.KeyHint, keys.Hint(key))
	}
	if u.CreatedAt.Before(before) || u.CreatedAt.After(after) {
		t.Errorf("created_at = %v, want between %v and %v", u.CreatedAt, before, after)
	}
	if u.ExpiresAt != nil || u.LastUsedAt != nil || u.Requests != 0 {
		t.Errorf("new user = %+v, want no expiry, never used", u)
	}
	svc := openService(t, db)
	if got, err := svc.Authenticate(t.Context(), key); err != nil || got.Name != "alice" {
		t.Errorf("Authenticate(new key) = %q, %v, want alice", got.Name, err)
	}
	if key2 := createKey(t, db, "bob"); key2 == key {
		t.Errorf("two users got the same key %q", key)
	}
}

func TestUserCreate_expires(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		expires string
		want    func(now time.Time) time.Time
	}{
		{"days", "30d", func(now time.Time) time.Time { return now.Add(30 * 24 * time.Hour) }},
		{"hours", "12h", func(now time.Time) time.Time { return now.Add(12 * time.Hour) }},
		{"weeks", "2w", func(now time.Time) time.Time { return now.Add(14 * 24 * time.Hour) }},
		{"date: valid through that day", "2027-01-31", func(time.Time) time.Time { return time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC) }},
		{"RFC 3339", "2031-05-06T07:08:09+02:00", func(time.Time) time.Time { return time.Date(2031, 5, 6, 5, 8, 9, 0, time.UTC) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			before := time.Now()
			createKey(t, db, "alice", "--expires", tc.expires)
			after := time.Now()
			u := userByName(t, db, "alice")
			if u.ExpiresAt == nil {
				t.Fatalf("--expires %s: expires_at = null", tc.expires)
			}
			lo, hi := tc.want(before).Truncate(time.Millisecond), tc.want(after)
			if u.ExpiresAt.Before(lo) || u.ExpiresAt.After(hi) {
				t.Errorf("--expires %s: expires_at = %v, want between %v and %v", tc.expires, u.ExpiresAt, lo, hi)
			}
		})
	}
}

// TestUser_errors runs each failing user command on a database that already
// holds alice (and bob, expired by nothing), and checks the one-line error
// and that the database did not change.
func TestUser_errors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 65)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"create bad name", []string{"user", "create", "bad name!"}, `user name "bad name!" may contain only`},
		{"create name of 65 characters", []string{"user", "create", long}, "longer than 64 characters"},
		{"create empty name", []string{"user", "create", ""}, "must not be empty"},
		{"create duplicate", []string{"user", "create", "alice"}, "user alice already exists"},
		{"create bad --expires", []string{"user", "create", "carol", "--expires", "soon"}, `invalid time "soon"`},
		{"create --expires zero", []string{"user", "create", "carol", "--expires", "0d"}, `invalid time "0d"`},
		{"create --expires in the past", []string{"user", "create", "carol", "--expires", "2020-01-01"}, "is in the past"},
		{"create --expires bad date", []string{"user", "create", "carol", "--expires", "2027-02-30"}, `invalid time "2027-02-30"`},
		{"create without NAME", []string{"user", "create"}, "user create: missing NAME"},
		{"create with two names", []string{"user", "create", "carol", "dave"}, `unexpected argument "dave"`},
		{"create unknown flag", []string{"user", "create", "carol", "--expire", "3d"}, "unknown flag: --expire"},
		{"reset missing user", []string{"user", "reset", "nobody"}, "user nobody not found"},
		{"reset bad name", []string{"user", "reset", "bad name!"}, "may contain only"},
		{"reset bad --expires", []string{"user", "reset", "alice", "--expires", "tomorrow"}, `invalid time "tomorrow"`},
		{"delete missing user", []string{"user", "delete", "nobody"}, "user nobody not found"},
		{"delete name of 65 characters", []string{"user", "delete", long}, "longer than 64 characters"},
		{"expire missing user", []string{"user", "expire", "nobody", "--never"}, "user nobody not found"},
		{"expire without a flag", []string{"user", "expire", "alice"}, "give exactly one of --in D, --at DATE or --never"},
		{"expire with two flags", []string{"user", "expire", "alice", "--in", "3d", "--never"}, "give exactly one of"},
		{"expire --at and --in", []string{"user", "expire", "alice", "--in", "3d", "--at", "2027-01-31"}, "give exactly one of"},
		{"expire bad --in", []string{"user", "expire", "alice", "--in", "3x"}, `invalid time "3x"`},
		{"expire empty --in", []string{"user", "expire", "alice", "--in", ""}, "empty time"},
		{"expire --at in the past", []string{"user", "expire", "alice", "--at", "2001-01-01"}, "is in the past"},
		{"list with an argument", []string{"user", "list", "alice"}, `unexpected argument "alice"`},
		{"unknown subcommand", []string{"user", "crate", "carol"}, `unknown command "crate" for "aiproxy user" (did you mean "create"?)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDBPath(t)
			createKey(t, db, "alice", "--expires", "30d")
			createKey(t, db, "bob")
			before := snapshot(t, db)
			r := run(t, "", append([]string{"--db", db}, tc.args...)...)
			checkFailed(t, r, tc.want)
			if diff := cmp.Diff(before, snapshot(t, db)); diff != "" {
				t.Errorf("aiproxy %s changed the database (-before +after):\n%s", strings.Join(tc.args, " "), diff)
			}
		})
	}
}

func TestUserReset(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	oldKey := createKey(t, db, "alice", "--expires", "2030-01-01")
	before := userByName(t, db, "alice")

	out := runOK(t, "--db", db, "user", "reset", "alice")
	newKey := strings.TrimSuffix(out, "\n")
	if !keys.Valid(newKey) || strings.Count(out, "\n") != 1 || newKey == oldKey {
		t.Fatalf("user reset printed %q, want a new key alone on one line", out)
	}
	after := userByName(t, db, "alice")
	if after.KeyHint != keys.Hint(newKey) {
		t.Errorf("key_hint after reset = %q, want %q", after.KeyHint, keys.Hint(newKey))
	}
	if diff := cmp.Diff(before.ExpiresAt, after.ExpiresAt); diff != "" {
		t.Errorf("reset without --expires changed the expiry (-before +after):\n%s", diff)
	}
	svc := openService(t, db)
	if _, err := svc.Authenticate(t.Context(), oldKey); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("Authenticate(old key) error = %v, want EUNAUTHORIZED", err)
	}
	if _, err := svc.Authenticate(t.Context(), newKey); err != nil {
		t.Errorf("Authenticate(new key) error = %v, want nil", err)
	}

	runOK(t, "--db", db, "user", "reset", "alice", "--expires", "2031-12-31")
	want := time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := userByName(t, db, "alice").ExpiresAt; got == nil || !got.Equal(want) {
		t.Errorf("reset --expires 2031-12-31: expires_at = %v, want %v", got, want)
	}
}

func TestUserDelete(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	key := createKey(t, db, "alice")
	createKey(t, db, "bob")
	if out := runOK(t, "--db", db, "user", "delete", "alice"); out != "" {
		t.Errorf("user delete printed %q, want nothing", out)
	}
	var names []string
	for _, u := range listUsers(t, db) {
		names = append(names, u.Name)
	}
	if diff := cmp.Diff([]string{"bob"}, names); diff != "" {
		t.Errorf("users after delete (-want +got):\n%s", diff)
	}
	if _, err := openService(t, db).Authenticate(t.Context(), key); aiproxy.ErrorCode(err) != aiproxy.EUNAUTHORIZED {
		t.Errorf("Authenticate(deleted user's key) error = %v, want EUNAUTHORIZED", err)
	}
	checkFailed(t, run(t, "", "--db", db, "user", "delete", "alice"), "user alice not found")
}

func TestUserExpire(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	key := createKey(t, db, "alice", "--expires", "30d")
	expires := func() *time.Time { return userByName(t, db, "alice").ExpiresAt }

	if out := runOK(t, "--db", db, "user", "expire", "alice", "--never"); out != "" {
		t.Errorf("user expire printed %q, want nothing", out)
	}
	if got := expires(); got != nil {
		t.Errorf("after --never: expires_at = %v, want null", got)
	}

	runOK(t, "--db", db, "user", "expire", "alice", "--at", "2027-01-31")
	if got, want := expires(), time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC); got == nil || !got.Equal(want) {
		t.Errorf("after --at 2027-01-31: expires_at = %v, want %v", got, want)
	}

	lo := time.Now().Add(48 * time.Hour).Truncate(time.Millisecond)
	runOK(t, "--db", db, "user", "expire", "alice", "--in", "2d")
	hi := time.Now().Add(48 * time.Hour)
	if got := expires(); got == nil || got.Before(lo) || got.After(hi) {
		t.Errorf("after --in 2d: expires_at = %v, want between %v and %v", got, lo, hi)
	}

	// The key is kept throughout.
	if u, err := openService(t, db).Authenticate(t.Context(), key); err != nil || u.Name != "alice" {
		t.Errorf("Authenticate(key) after expire = %q, %v, want alice", u.Name, err)
	}
}

func TestUserList_empty(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	if got := runOK(t, "--db", db, "user", "list", "--json"); got != "[]\n" {
		t.Errorf("user list --json on an empty database = %q, want \"[]\\n\"", got)
	}
	got := runOK(t, "--db", db, "user", "list")
	if want := "NAME  KEY  CREATED  EXPIRES  LAST USED  REQUESTS  LIMITS\n"; got != want {
		t.Errorf("user list on an empty database = %q, want %q", got, want)
	}
}

func TestUserList_golden(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	seedGolden(t, db)
	plain := runOK(t, "--db", db, "user", "list")
	checkGolden(t, "user_list", plain)
	js := runOK(t, "--db", db, "user", "list", "--json")
	checkGolden(t, "user_list_json", js)

	// The terminal table, drawn into a buffer: same cells, no ANSI codes.
	var users []aiproxy.User
	if err := json.Unmarshal([]byte(js), &users); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := userListing(users, time.Now()).writeTable(&buf, lipgloss.NewRenderer(&buf)); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "user_list_table", buf.String())
	if strings.Contains(buf.String(), "\x1b") {
		t.Errorf("table drawn into a buffer contains ANSI escapes:\n%q", buf.String())
	}
}

// TestUserKeys_notStored creates and resets users and then reads the
// database file and its WAL byte by byte: no key may be there, only hashes.
func TestUserKeys_notStored(t *testing.T) {
	t.Parallel()
	db := newDBPath(t)
	// A second handle, like a running serve, keeps the WAL file alive.
	holder, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var created []string
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		created = append(created, createKey(t, db, name))
	}
	created = append(created, strings.TrimSpace(runOK(t, "--db", db, "user", "reset", "carol")))

	raw := func() []byte {
		var all []byte
		for _, f := range []string{db, db + "-wal"} {
			b, err := os.ReadFile(f)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			all = append(all, b...)
		}
		return all
	}
	check := func(when string, b []byte, keysWanted []string) {
		t.Helper()
		for _, k := range created {
			if bytes.Contains(b, []byte(k)) {
				t.Errorf("%s: database files contain the key %s", when, keys.Hint(k))
			}
			// Nor its random part alone, in any encoding that keeps it.
			if bytes.Contains(b, []byte(k[len(keys.Prefix):])) {
				t.Errorf("%s: database files contain the random part of key %s", when, keys.Hint(k))
			}
		}
		for _, k := range keysWanted {
			if !bytes.Contains(b, []byte(keys.Hash(k))) {
				t.Errorf("%s: database files lack the hash of key %s", when, keys.Hint(k))
			}
		}
	}
	live := []string{created[0], created[1], created[3], created[4], created[5]}
	if _, err := os.Stat(db + "-wal"); err != nil {
		t.Errorf("WAL file: %v, want it to exist while a second handle is open", err)
	}
	check("with WAL", raw(), live)

	// Closing the last handle checkpoints the WAL into the main file.
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	check("main file after checkpoint", main, live)
}
