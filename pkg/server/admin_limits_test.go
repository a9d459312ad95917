package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// TestAdminLimit_BodyOfTheFlagsNamesAnswersTheUsersRow: both forms of the
// route, null and "none" remove, models as a string or an array, clear.
func TestAdminLimit_BodyOfTheFlagsNamesAnswersTheUsersRow(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	if _, err := h.svc.CreateUser(context.Background(), "carol", admin.Expiry{}); err != nil {
		t.Fatal(err)
	}
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}
	tests := []struct {
		name, path, body string
		hdr              map[string]string
		want             string // the row's limits
	}{
		{"token in the path", "/" + adminToken + "/limit/carol", `{"rpm":60,"spend":"5/month","models":"gpt-4o*"}`, nil,
			`{"rpm":60,"tpm":null,"concurrent":null,"tokens":null,` +
				`"spend":{"limit_usd":5,"period":"month","used_usd":0,"resets_at":"RESET"},"models":["gpt-4o*"],"default":false}`},
		{"bearer, null and none remove, models an array", "/admin/limit/carol", `{"rpm":null,"spend":"none","models":["o1","gpt-*"],"concurrent":2}`, bearer,
			`{"rpm":null,"tpm":null,"concurrent":2,"tokens":null,"spend":null,"models":["o1","gpt-*"],"default":false}`},
		{"clear", "/admin/limit/carol", `{"clear":true}`, bearer,
			`{"rpm":null,"tpm":null,"concurrent":null,"tokens":null,"spend":null,"models":null,"default":true}`},
	}
	for _, tc := range tests {
		a := call(h, "POST", tc.path, tc.body, tc.hdr)
		if a.status != http.StatusOK {
			t.Fatalf("%s: status %d, body %s", tc.name, a.status, a.body)
		}
		var row struct {
			Name   string          `json:"name"`
			Limits json.RawMessage `json:"limits"`
		}
		if err := json.Unmarshal([]byte(a.body), &row); err != nil || row.Name != "carol" {
			t.Fatalf("%s: body %s is not carol's row: %v", tc.name, a.body, err)
		}
		want := strings.ReplaceAll(tc.want, "RESET", aiproxy.PeriodMonth.Reset(h.svc.Now()).Format("2006-01-02T15:04:05Z"))
		if diff := cmp.Diff(want, string(row.Limits)); diff != "" {
			t.Errorf("%s: limits (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestAdminLimit_BadBodiesGet400NamingTheFieldAndChangeNothing.
func TestAdminLimit_BadBodiesGet400NamingTheFieldAndChangeNothing(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	if _, err := h.svc.CreateUser(context.Background(), "carol", admin.Expiry{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.SetLimits(context.Background(), "carol", admin.LimitsUpdate{Changes: []admin.LimitChange{{Field: "rpm", Value: "5"}}}); err != nil {
		t.Fatal(err)
	}
	before := snap(t, h.svc)
	tests := []struct{ name, body, says string }{
		{"negative", `{"rpm":-5}`, `invalid rpm "-5": it is negative`},
		{"a fraction", `{"tpm":1.5}`, `invalid tpm "1.5"`},
		{"unknown period", `{"tokens":"5/fortnight"}`, `unknown period "fortnight"`},
		{"unknown unit", `{"spend":"5 EUR/month"}`, `invalid spend "5 EUR/month"`},
		{"unknown field", `{"rpm":5,"rph":5}`, "unknown field"},
		{"wrong type", `{"rpm":true}`, `field "rpm" has the wrong type`},
		{"a number for models", `{"models":5}`, `field "models" has the wrong type`},
		{"clear not a boolean", `{"clear":"yes"}`, `"clear" must be true or false`},
		{"good then bad", `{"rpm":7,"concurrent":-1}`, `invalid concurrent "-1"`},
		{"empty object", `{}`, "nothing to change"},
		{"no body", ``, "missing request body"},
		{"not an object", `[1]`, "not a valid JSON object"},
		{"trailing data", `{"rpm":1} {}`, "data after the JSON object"},
	}
	for _, tc := range tests {
		a := call(h, "POST", "/"+adminToken+"/limit/carol", tc.body, nil)
		var e struct{ Error struct{ Message string } }
		json.Unmarshal([]byte(a.body), &e)
		if a.status != http.StatusBadRequest || !strings.Contains(e.Error.Message, tc.says) {
			t.Errorf("%s: status %d, body %s; want 400 saying %q", tc.name, a.status, a.body, tc.says)
		}
	}
	if diff := cmp.Diff(before, snap(t, h.svc)); diff != "" {
		t.Errorf("state changed by refused bodies (-before +after):\n%s", diff)
	}
	if a := call(h, "POST", "/"+adminToken+"/limit/bob", `{"rpm":1}`, nil); a.status != http.StatusNotFound {
		t.Errorf("missing user: status %d, want 404", a.status)
	}
	if a := call(h, "GET", "/"+adminToken+"/limit/carol", "", nil); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", a.status)
	}
}

// TestAdminLimit_DefaultsOnStar: the defaults are set on *, and users
// without their own list them with "default": true.
func TestAdminLimit_DefaultsOnStar(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	if _, err := h.svc.CreateUser(context.Background(), "carol", admin.Expiry{}); err != nil {
		t.Fatal(err)
	}
	a := call(h, "POST", "/"+adminToken+"/limit/*", `{"tokens":"1000/total"}`, nil)
	if a.status != http.StatusOK || !strings.Contains(a.body, `"name":"*"`) {
		t.Fatalf("POST limit/*: status %d, body %s", a.status, a.body)
	}
	users := call(h, "GET", "/"+adminToken+"/users", "", nil)
	if !strings.Contains(users.body, `"tokens":{"limit":1000,"period":"total","used":0,"resets_at":null}`) ||
		!strings.Contains(users.body, `"default":true`) {
		t.Errorf("users = %s, want carol with the default token budget", users.body)
	}
}
