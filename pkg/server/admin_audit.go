package server

import (
	"context"
	"net/http"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/audit"
)

// adminAudit is the twin of `aiproxy audit [--since D]`:
// GET /{token}/audit[?since=D] (and /admin/audit), a JSON array of
// {"time","source","actor","action","target","result"}.
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) error {
	recs, err := s.svc.AuditLog(r.Context(), r.URL.Query().Get("since"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, recs)
	return nil
}

// auditContext is r's context naming the source of any change the request
// makes, for the audit log: HTTP and the connection's address. A request
// other than GET or HEAD also names its change until the service does: its
// method and route ("POST /limit/{name}") on the route's path values, less
// the token and any key, so that an operation whose service method does
// not yet name itself is still recorded.
func auditContext(r *http.Request) context.Context {
	action, target := "", ""
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		action, target = routeChange(r)
	}
	return audit.NewContext(r.Context(), audit.HTTP(r.RemoteAddr), action, target)
}

// routeActions are the CLI's names of the changes the admin routes make
// ("METHOD /first-segment" → the command path with dots), so that a change
// refused before the service names it is recorded as the CLI records it.
var routeActions = map[string]string{
	"POST /register":   "user.create",
	"POST /reset":      "user.reset",
	"DELETE /delete":   "user.delete",
	"POST /expire":     "user.expire",
	"POST /limit":      "user.limit",
	"POST /addkey":     "provider.add",
	"POST /provider":   "provider.set",
	"DELETE /provider": "provider.remove",
	"POST /price":      "price.set",
	"DELETE /price":    "price.remove",
}

// routeChange names the change of an admin request from its route pattern:
// "/{token}/register/{name}" → "user.create" (routeActions), else
// "POST /other/{name}", on the route's path values.
func routeChange(r *http.Request) (action, target string) {
	p := r.Pattern
	if i := strings.IndexByte(p, '/'); i >= 0 {
		p = p[i:] // drop a method or host
	}
	p = strings.TrimPrefix(p, "/{token}")
	p = strings.TrimPrefix(p, "/admin")
	var values []string
	for _, seg := range strings.Split(p, "/") {
		if !strings.HasPrefix(seg, "{") {
			continue
		}
		name := strings.TrimSuffix(strings.TrimSuffix(strings.Trim(seg, "{}"), "..."), "$")
		if name == "token" || name == "key" || name == "" {
			continue
		}
		values = append(values, r.PathValue(name))
	}
	action = r.Method + " " + p
	first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if a, ok := routeActions[r.Method+" /"+first]; ok {
		action = a
	}
	return action, strings.Join(values, " ")
}
