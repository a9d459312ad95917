package admin_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "modernc.org/sqlite"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/audit"
)

// fromHTTP is the context an HTTP admin request gives the service.
func fromHTTP(t *testing.T) context.Context {
	return audit.NewContext(t.Context(), audit.HTTP("192.0.2.7:51234"), "", "")
}

func auditLog(t *testing.T, f fixture) []audit.Record {
	t.Helper()
	recs, err := f.svc.AuditLog(t.Context(), "")
	if err != nil {
		t.Fatalf("AuditLog() error = %v", err)
	}
	return recs
}

// TestAudit_EveryChangeIsRecorded: each admin change, done or refused, is
// one row naming the source, the action, the target and the result.
func TestAudit_EveryChangeIsRecorded(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := fromHTTP(t)
	in := func(d time.Duration) admin.Expiry { return at(t0.Add(d)) }
	steps := []struct {
		name   string
		do     func() error
		action string
		target string
		result string
	}{
		{"create", func() error { return errOf(f.svc.CreateUser(ctx, "alice", admin.Expiry{})) }, "user.create", "alice", "ok"},
		{"create again", func() error { return errOf(f.svc.CreateUser(ctx, "alice", admin.Expiry{})) }, "user.create", "alice", "refused: conflict"},
		{"create bad name", func() error { return errOf(f.svc.CreateUser(ctx, "a b", admin.Expiry{})) }, "user.create", "a b", "refused: invalid"},
		{"reset", func() error { return errOf(f.svc.ResetUser(ctx, "alice", admin.Expiry{})) }, "user.reset", "alice", "ok"},
		{"reset missing", func() error { return errOf(f.svc.ResetUser(ctx, "bob", admin.Expiry{})) }, "user.reset", "bob", "refused: not_found"},
		{"expire", func() error { return f.svc.SetUserExpiry(ctx, "alice", in(time.Hour)) }, "user.expire", "alice", "ok"},
		{"expire in the past", func() error { return f.svc.SetUserExpiry(ctx, "alice", in(-time.Hour)) }, "user.expire", "alice", "refused: invalid"},
		{"add key", func() error {
			return f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.example.com", Key: "sk-provider-secret-0123456789"})
		}, "provider.add", "api.example.com", "ok"},
		{"set inject", func() error { return f.svc.SetProviderInjectUsage(ctx, "api.example.com", false) }, "provider.set", "api.example.com", "ok"},
		{"remove key", func() error { return f.svc.RemoveProvider(ctx, "api.example.com", "sk-provider-secret-0123456789") }, "provider.remove_key", "api.example.com", "ok"},
		{"remove missing host", func() error { return f.svc.RemoveProvider(ctx, "nowhere.example", "") }, "provider.remove", "nowhere.example", "refused: not_found"},
		{"delete", func() error { return f.svc.DeleteUser(ctx, "alice") }, "user.delete", "alice", "ok"},
	}
	var want []audit.Record
	for _, s := range steps {
		s.do()
		want = append(want, audit.Record{Time: t0, Source: "http", Actor: "192.0.2.7", Action: s.action, Target: s.target, Result: s.result})
	}
	if diff := cmp.Diff(want, auditLog(t, f)); diff != "" {
		t.Errorf("audit log (-want +got):\n%s", diff)
	}
}

// TestAudit_RecordedInTheChangesTransaction: a change whose record cannot
// be written is not made either.
func TestAudit_RecordedInTheChangesTransaction(t *testing.T) {
	t.Parallel()
	f := newService(t)
	raw, err := sql.Open("sqlite", f.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A trigger that refuses every audit row: the change must go with it.
	if _, err := raw.Exec(`CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'no audit'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateUser(fromHTTP(t), "alice", admin.Expiry{}); err == nil {
		t.Fatalf("CreateUser() with the audit log refusing rows: error = nil, want one")
	}
	users, err := f.svc.ListUsers(t.Context())
	if err != nil || len(users) != 0 {
		t.Errorf("ListUsers() = %v, %v; want no user: the change must roll back with its record", users, err)
	}
}

// TestAudit_RefusedChangeOwnTransaction: a refused change leaves the data
// as it was and is recorded all the same.
func TestAudit_RefusedChangeOwnTransaction(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := fromHTTP(t)
	f.createUser(t, "alice", admin.Expiry{})
	before, _ := f.svc.ListUsers(t.Context())
	_, err := f.svc.CreateUser(ctx, "alice", admin.Expiry{})
	wantCode(t, "CreateUser(alice) again", err, aiproxy.ECONFLICT)
	after, _ := f.svc.ListUsers(t.Context())
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("users changed by a refused create (-before +after):\n%s", diff)
	}
	recs := auditLog(t, f)
	if len(recs) != 2 || recs[1].Result != "refused: conflict" {
		t.Errorf("audit log = %+v, want the create and then the refused one", recs)
	}
}

// TestAudit_SelfServiceReset: POST /me/reset is recorded under the user's
// name; a stranger's refused key is not recorded at all.
func TestAudit_SelfServiceReset(t *testing.T) {
	t.Parallel()
	f := newService(t)
	key := f.createUser(t, "alice", admin.Expiry{})
	ctx := fromHTTP(t)
	if _, _, err := f.svc.ResetOwnKey(ctx, key); err != nil {
		t.Fatalf("ResetOwnKey() error = %v", err)
	}
	if _, _, err := f.svc.ResetOwnKey(fromHTTP(t), key); err == nil {
		t.Fatalf("ResetOwnKey(old key) error = nil, want EUNAUTHORIZED")
	}
	recs := auditLog(t, f)
	want := []audit.Record{
		{Time: t0, Action: "user.create", Target: "alice", Result: "ok"},
		{Time: t0, Source: "http", Actor: "192.0.2.7", Action: "user.reset_self", Target: "alice", Result: "ok"},
	}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("audit log (-want +got):\n%s", diff)
	}
}

// TestAudit_NeverASecret: no key, user or provider, reaches the audit log,
// not even one typed where a name goes.
func TestAudit_NeverASecret(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := fromHTTP(t)
	const provKey = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
	userKey := f.createUser(t, "alice", admin.Expiry{})
	f.svc.AddProviderKey(ctx, admin.ProviderKey{Host: "api.example.com", Key: provKey})
	f.svc.RemoveProvider(ctx, "api.example.com", provKey)
	f.svc.DeleteUser(ctx, userKey)                                                // a key pasted as a name
	f.svc.CreateUser(ctx, "AIzaSyA1234567890abcdefghijklmnopqrs", admin.Expiry{}) // a Google key as a name
	f.svc.ResetOwnKey(ctx, userKey)
	for _, r := range auditLog(t, f) {
		line := strings.Join([]string{r.Source, r.Actor, r.Action, r.Target, r.Result}, " ")
		for _, secret := range []string{provKey, userKey, userKey[6:20], "AIzaSyA1234567890abcdefghijklmnopqrs", f.keys.made[len(f.keys.made)-1]} {
			if strings.Contains(line, secret) {
				t.Errorf("audit row %q holds a secret", line)
			}
		}
	}
}

// TestAudit_TransportFallback: a change the service does not name (an
// operation added to a transport first) is recorded under the transport's
// name for it when it writes.
func TestAudit_TransportFallback(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := audit.NewContext(t.Context(), audit.Source{Kind: audit.KindCLI, Actor: "root"}, "user.something", "bob")
	if err := f.db.CreateUser(ctx, "bob", "hash", "hint", t0, nil); err != nil {
		t.Fatal(err)
	}
	recs := auditLog(t, f)
	if len(recs) != 1 || recs[0].Action != "user.something" || recs[0].Source != "cli" || recs[0].Actor != "root" || recs[0].Target != "bob" {
		t.Errorf("audit log = %+v, want one cli row for user.something on bob", recs)
	}
}

// TestAudit_Since: --since filters by time; a malformed one is EINVALID.
func TestAudit_Since(t *testing.T) {
	t.Parallel()
	f := newService(t)
	f.createUser(t, "old", admin.Expiry{})
	f.clock.Set(t0.Add(48 * time.Hour))
	f.createUser(t, "new", admin.Expiry{})
	recs, err := f.svc.AuditLog(t.Context(), "1d")
	if err != nil || len(recs) != 1 || recs[0].Target != "new" {
		t.Errorf("AuditLog(1d) = %+v, %v; want only new", recs, err)
	}
	_, err = f.svc.AuditLog(t.Context(), "yesterday")
	wantCode(t, "AuditLog(yesterday)", err, aiproxy.EINVALID)
}
