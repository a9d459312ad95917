package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// storedPrices is the price state a request may change.
func storedPrices(t *testing.T, h *harness) []aiproxy.Price {
	t.Helper()
	ps, err := h.db.ListPrices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// TestAdminPrices_Routes: set, list and remove a price over both route
// forms, for a model whose name holds a "/".
func TestAdminPrices_Routes(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	bearer := map[string]string{"Authorization": "Bearer " + adminToken}

	a := call(h, "POST", "/admin/price/openai/gpt-oss-120b", `{"input":0.15,"output":0.6,"cached_input":0.075}`, bearer)
	if a.status != http.StatusOK || a.body != "OK\n" {
		t.Fatalf("POST /admin/price/openai/gpt-oss-120b = %d %q, want 200 OK", a.status, a.body)
	}
	wantAdminHeaders(t, a)
	a = call(h, "POST", "/"+adminToken+"/price/gpt-4o", `{"input":1,"output":2}`, map[string]string{"Accept": "application/json"})
	if a.status != http.StatusOK || strings.TrimSpace(a.body) != `{"ok":true}` {
		t.Fatalf("POST /{token}/price/gpt-4o = %d %q, want 200 {\"ok\":true}", a.status, a.body)
	}

	for _, path := range []string{"/" + adminToken + "/prices", "/admin/prices"} {
		a = call(h, "GET", path, "", bearer)
		if a.status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, a.status, a.body)
		}
		var rows []map[string]any
		if err := json.Unmarshal([]byte(a.body), &rows); err != nil {
			t.Fatalf("GET %s body %q: %v", path, a.body, err)
		}
		byModel := map[string]map[string]any{}
		for _, r := range rows {
			byModel[r["model"].(string)] = r
		}
		want := map[string]map[string]any{
			"openai/gpt-oss-120b": {"model": "openai/gpt-oss-120b", "input": 0.15, "output": 0.6, "cached_input": 0.075, "built_in": false},
			"gpt-4o":              {"model": "gpt-4o", "input": 1.0, "output": 2.0, "cached_input": nil, "built_in": false},
			"gpt-4o-mini":         {"model": "gpt-4o-mini", "input": 0.15, "output": 0.6, "cached_input": 0.075, "built_in": true},
		}
		for m, w := range want {
			if diff := cmp.Diff(w, byModel[m]); diff != "" {
				t.Errorf("GET %s row %s (-want +got):\n%s", path, m, diff)
			}
		}
	}

	a = call(h, "DELETE", "/"+adminToken+"/price/openai/gpt-oss-120b", "", nil)
	if a.status != http.StatusOK {
		t.Fatalf("DELETE price = %d %s", a.status, a.body)
	}
	a = call(h, "DELETE", "/admin/price/gpt-4o", "", bearer)
	if a.status != http.StatusOK {
		t.Fatalf("DELETE /admin/price/gpt-4o = %d %s", a.status, a.body)
	}
	if got := storedPrices(t, h); len(got) != 0 {
		t.Errorf("stored prices after both removes = %v, want none", got)
	}
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/price/local/no-such-model", http.StatusNotFound, "not_found"},
		{"/price/openai/gpt-oss-120b", http.StatusConflict, "conflict"}, // a built-in price alone
		{"/price/gpt-4o", http.StatusConflict, "conflict"},
	} {
		a = call(h, "DELETE", "/"+adminToken+tc.path, "", nil)
		if code, _ := openaiError(t, a); a.status != tc.status || code != tc.code {
			t.Errorf("DELETE %s = %d %s, want %d %s", tc.path, a.status, a.body, tc.status, tc.code)
		}
	}

	a = call(h, "PUT", "/"+adminToken+"/price/gpt-4o", `{"input":1,"output":2}`, nil)
	if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "DELETE, POST" {
		t.Errorf("PUT price = %d, Allow %q; want 405 with Allow: DELETE, POST", a.status, a.header.Get("Allow"))
	}
}

// TestAdminPrices_BadBodyNamesTheFieldAndChangesNothing: a price that is
// negative, not a number, missing, or comes with an unknown field is
// refused with 400 and a message naming the field, and nothing changes.
func TestAdminPrices_BadBodyNamesTheFieldAndChangesNothing(t *testing.T) {
	t.Parallel()
	h := newAdminHarness(t)
	tests := []struct {
		name, body, want string
	}{
		{"negative input", `{"input":-1,"output":2}`, "input"},
		{"negative cached input", `{"input":1,"output":2,"cached_input":-0.1}`, "cached input"},
		{"input not a number", `{"input":"abc","output":2}`, `"input"`},
		{"output a string number", `{"input":1,"output":"2"}`, `"output"`},
		{"missing output", `{"input":1}`, "output"},
		{"unknown field", `{"input":1,"output":2,"cache_read":0.1}`, `"cached_input"`},
		{"no body", ``, "input"},
		{"not JSON", `input=1`, "JSON"},
		{"two objects", `{"input":1,"output":2}{}`, "after the JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := call(h, "POST", "/admin/price/m", tc.body, map[string]string{"Authorization": "Bearer " + adminToken})
			code, _ := openaiError(t, a)
			var e struct{ Error struct{ Message string } }
			json.Unmarshal([]byte(a.body), &e)
			if a.status != http.StatusBadRequest || code != "invalid_request" || !strings.Contains(e.Error.Message, tc.want) {
				t.Errorf("POST %s = %d %s, want 400 invalid_request naming %s", tc.body, a.status, a.body, tc.want)
			}
			if strings.Contains(e.Error.Message, "\n") {
				t.Errorf("message %q is more than one line", e.Error.Message)
			}
			if got := storedPrices(t, h); len(got) != 0 {
				t.Errorf("stored prices after a refused request = %v, want none", got)
			}
		})
	}
}
