package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/audit"
)

// TestAdminAudit_HTTPChangesAreRecorded: changes over the HTTP admin are
// recorded with source http and the client's address, done or refused, and
// GET /{token}/audit and /admin/audit list them, never with the token or a
// key.
func TestAdminAudit_HTTPChangesAreRecorded(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	const provKey = "sk-provider-secret-0123456789abcdef"
	for _, c := range []struct{ method, path string }{
		{"POST", "/" + adminToken + "/register/bob"},
		{"POST", "/" + adminToken + "/register/bob"}, // refused: conflict
		{"POST", "/" + adminToken + "/addkey/api.example.com/" + provKey},
		{"POST", "/" + adminToken + "/expire/bob"}, // refused before the service: no ?expires
		{"DELETE", "/" + adminToken + "/delete/bob"},
	} {
		call(h, c.method, c.path, "", nil)
	}
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}
	var got [2][]audit.Record
	for i, path := range []string{"/" + adminToken + "/audit", "/admin/audit"} {
		a := call(h, "GET", path, "", bearer)
		if a.status != 200 {
			t.Fatalf("GET %s = %d %s", path, a.status, a.body)
		}
		if strings.Contains(a.body, adminToken) || strings.Contains(a.body, provKey) {
			t.Errorf("GET %s holds the token or a key: %s", path, a.body)
		}
		if err := json.Unmarshal([]byte(a.body), &got[i]); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, a.body)
		}
	}
	type row struct{ Source, Actor, Action, Target, Result string }
	var rows []row
	for _, r := range got[0] {
		if r.Source == "http" { // newAdminHarness's own setup comes without a transport
			rows = append(rows, row{r.Source, r.Actor, r.Action, r.Target, r.Result})
		}
	}
	want := []row{
		{"http", "127.0.0.1", "user.create", "bob", "ok"},
		{"http", "127.0.0.1", "user.create", "bob", "refused: conflict"},
		{"http", "127.0.0.1", "provider.add", "api.example.com", "ok"},
		{"http", "127.0.0.1", "user.expire", "bob", "refused: invalid"},
		{"http", "127.0.0.1", "user.delete", "bob", "ok"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("audit log (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got[0], got[1]); diff != "" {
		t.Errorf("/{token}/audit and /admin/audit differ (-token +admin):\n%s", diff)
	}
	a := call(h, "GET", "/"+adminToken+"/audit?since=yesterday", "", nil)
	if a.status != 400 {
		t.Errorf("GET audit?since=yesterday = %d %s, want 400", a.status, a.body)
	}
}
