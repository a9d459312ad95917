package server

import (
	"net/http"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// me answers GET /me: the caller's name, key hint, expiry and usage.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	key, ok := proxy.Bearer(r)
	if !ok {
		s.writeError(w, r, aiproxy.Errorf(aiproxy.EUNAUTHORIZED, "missing or invalid API key: send Authorization: Bearer sk-cfw…"))
		return
	}
	me, err := s.svc.Me(r.Context(), key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, me)
}

// meReset answers POST /me/reset: a new key for the caller, the old one
// dead at once.
func (s *Server) meReset(w http.ResponseWriter, r *http.Request) {
	key, ok := proxy.Bearer(r)
	if !ok {
		s.writeError(w, r, aiproxy.Errorf(aiproxy.EUNAUTHORIZED, "missing or invalid API key: send Authorization: Bearer sk-cfw…"))
		return
	}
	name, nk, err := s.svc.ResetOwnKey(r.Context(), key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "key": nk})
		return
	}
	writeText(w, nk)
}

func writeText(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(s + "\n"))
}
