package server

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// me answers GET /me: the caller's name, key hint, expiry and usage.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	if me, ok := s.caller(w, r); ok {
		writeJSON(w, http.StatusOK, me)
	}
}

// caller returns the record of the user whose key r presents, for the
// routes that answer about the caller (/me, billing); otherwise it answers
// the error itself and reports false. The answer is not to be cached.
func (s *Server) caller(w http.ResponseWriter, r *http.Request) (admin.Me, bool) {
	key, err := userKey(r)
	if err == nil {
		var me admin.Me
		if me, err = s.svc.Me(r.Context(), key); err == nil {
			w.Header().Set("Cache-Control", "no-store")
			return me, true
		}
	}
	s.writeError(w, r, err)
	return admin.Me{}, false
}

// meReset answers POST /me/reset: a new key for the caller, the old one
// dead at once.
func (s *Server) meReset(w http.ResponseWriter, r *http.Request) {
	key, err := userKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	u, err := s.svc.Authenticate(r.Context(), key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if wait := s.resets.take(u.ID); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
		s.writeError(w, r, aiproxy.Errorf(aiproxy.ERATELIMITED, "this key was reset moments ago; try again later"))
		return
	}
	// The audit log names who reset their key: source http, the client.
	name, nk, err := s.svc.ResetOwnKey(auditContext(r), key)
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

// resetInterval is the shortest time between two self-resets of one user:
// a leaked key cannot be used to spin through new keys (PLAN-3).
const resetInterval = 10 * time.Second

// resetThrottle remembers each user's last self-reset.
type resetThrottle struct {
	mu   sync.Mutex
	now  func() time.Time
	last map[int64]time.Time
}

func newResetThrottle() *resetThrottle {
	return &resetThrottle{now: time.Now, last: map[int64]time.Time{}}
}

// take records a reset for user and returns 0, or how long the user must
// wait if the last reset was under resetInterval ago.
func (t *resetThrottle) take(user int64) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if last, ok := t.last[user]; ok {
		if wait := last.Add(resetInterval).Sub(now); wait > 0 {
			return wait
		}
	}
	if len(t.last) > 10_000 {
		for id, last := range t.last {
			if now.Sub(last) >= resetInterval {
				delete(t.last, id)
			}
		}
	}
	t.last[user] = now
	return 0
}
