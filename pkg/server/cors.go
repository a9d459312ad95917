package server

import (
	"net/http"
	"slices"
	"strings"
)

// cors sets the CORS headers of a proxy or /me answer and answers a
// preflight itself (204, no authentication). It reports whether the request
// has been answered. Admin routes never call it.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	origin := r.Header.Get("Origin")
	if len(s.cfg.CORSOrigins) == 0 {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Add("Vary", "Origin")
		if origin == "" || !slices.Contains(s.cfg.CORSOrigins, origin) {
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				w.WriteHeader(http.StatusNoContent)
				return true
			}
			return false
		}
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		h.Set("Access-Control-Expose-Headers", "*")
		return false
	}
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", allowHeaders(r.Header.Get("Access-Control-Request-Headers")))
	h.Set("Access-Control-Max-Age", "86400")
	h.Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// allowHeaders allows the headers a browser asks for (the OpenAI SDKs send
// a growing list of x-stainless-* headers) plus the ones aiproxy needs.
// Only header-name characters are echoed.
func allowHeaders(requested string) string {
	out := []string{"Authorization", "Content-Type", "X-Host-Final"}
	for _, name := range strings.Split(requested, ",") {
		name = strings.TrimSpace(name)
		if name == "" || !validHeaderName(name) || len(out) > 100 {
			continue
		}
		dup := false
		for _, o := range out {
			if strings.EqualFold(o, name) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, name)
		}
	}
	return strings.Join(out, ", ")
}

func validHeaderName(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
