// Package server is aiproxy's HTTP surface: it dispatches proxy paths to
// pkg/proxy and serves the admin, self-service (/me) and health routes,
// with CORS, panic recovery and one log line per request.
package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/httperr"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// Config holds the server's settings.
type Config struct {
	// AccessToken enables the admin routes; empty turns them off.
	AccessToken string
	// CORSOrigins, when not empty, are the only origins allowed to read
	// proxy and /me answers; empty allows any origin ("*").
	CORSOrigins []string
	// Metrics, when set, answers GET /metrics for the admin token (Bearer)
	// or a loopback client; anyone else gets the 403 of an unknown route.
	Metrics http.Handler
}

// Server is the http.Handler of `aiproxy serve`.
type Server struct {
	svc    *admin.Service
	px     *proxy.Proxy
	log    *slog.Logger
	cfg    Config
	mux    *http.ServeMux
	guard  *tokenGuard
	resets *resetThrottle
}

// New returns the handler for svc and px.
func New(svc *admin.Service, px *proxy.Proxy, log *slog.Logger, cfg Config) *Server {
	s := &Server{svc: svc, px: px, log: log, cfg: cfg, mux: http.NewServeMux(), guard: newTokenGuard(), resets: newResetThrottle()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /me", s.me)
	s.mux.HandleFunc("POST /me/reset", s.meReset)
	s.mux.HandleFunc("/me", s.methodNotAllowed("GET"))
	s.mux.HandleFunc("/me/reset", s.methodNotAllowed("POST"))
	s.registerAdmin(s.mux)
	s.mux.HandleFunc("/", s.forbidden)
	return s
}

// ServeHTTP dispatches on the first path segment. Proxy paths (openai,
// v<digits>, a registered provider host) go to the proxy before the mux, as
// `v<digits>` cannot be a mux pattern and /{token}/… would clash with them.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			// The panic value may print a request, keys included: log only
			// runtime errors' own text, and the stack.
			msg := fmt.Sprintf("%T", v)
			if re, ok := v.(runtime.Error); ok {
				msg = re.Error()
			}
			s.log.Error("panic", "path", redactPath(r.URL.Path), "panic", msg, "stack", string(debug.Stack()))
			httperr.Write(w, errors.New("panic"))
		}
	}()
	// A proxied answer bounds each write to its client; the next request
	// on the connection starts without that deadline.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	id := requestID(r)
	w.Header().Set("X-Request-Id", id)
	// The path as it came, without escaping it again: a request's cost must
	// not grow with a long path before its key is checked.
	raw := r.URL.RawPath
	if raw == "" {
		raw = r.URL.Path
	}
	seg, _ := firstSegment(raw)
	if which, ok := billingRoute(raw); ok && (seg == "dashboard" || seg == "v1") {
		if s.cors(w, r) {
			return
		}
		s.billing(w, r, which)
		return
	}
	switch {
	case seg == "openai" || aiproxy.IsVersion(seg):
		if s.cors(w, r) {
			return
		}
		s.proxy(w, r, proxy.Route{RequestID: id})
		return
	case raw != cleanPath(raw):
		// The mux would answer with a redirect that repeats the path, admin
		// token included; no route has such a path, so it gets the 403.
		s.forbidden(w, r)
		return
	case seg == "metrics" && raw == "/metrics" && s.cfg.Metrics != nil && r.Method == http.MethodGet:
		if !s.metricsAllowed(r) {
			s.forbidden(w, r)
			return
		}
		s.cfg.Metrics.ServeHTTP(w, r)
		return
	case seg == "me":
		if s.cors(w, r) {
			return
		}
	case seg == "healthz" || seg == "admin" || seg == "":
	case !aiproxy.Reserved(seg) && s.px.Registered(r.Context(), seg):
		if s.cors(w, r) {
			return
		}
		s.proxy(w, r, proxy.Route{Host: seg, RequestID: id})
		return
	}
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "http",
		slog.String("request_id", id),
		slog.String("method", r.Method),
		slog.String("path", aiproxy.Clip(redactPath(r.URL.Path), aiproxy.MaxPathLen)),
		slog.Int("status", rec.status),
		slog.Float64("dur_ms", float64(time.Since(start).Microseconds())/1000))
}

// metricsAllowed: the admin token as a Bearer (compared in constant
// time), or a client on the loopback network.
func (s *Server) metricsAllowed(r *http.Request) bool {
	if tok, ok := Bearer(r); ok && s.cfg.AccessToken != "" {
		a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.cfg.AccessToken))
		if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return true
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// proxy hands r to the proxy with the user key it presents.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request, route proxy.Route) {
	key, err := userKey(r)
	if err != nil {
		refuse(w, r, err)
		return
	}
	route.Key = key
	s.px.Serve(w, r, route)
}

// redactPath returns p fit for a log: the admin token (the first segment
// of a /{token}/… path) and a provider key (addkey/{host}/{key},
// provider/{host}/{key}) become ***. It works on the cleaned path, the one
// the mux routes, so that /me/../TOKEN/users is redacted too, and keeps of a
// token or /admin path only a known admin verb and its argument: anything
// else there could be a token or key shifted by an escaped slash.
func redactPath(p string) string {
	p = cleanPath(p)
	segs := strings.Split(p[1:], "/")
	first := segs[0]
	if first == "me" && p != "/me" && p != "/me/reset" || first == "healthz" && p != "/healthz" {
		return "/" + first + "/***" // no such route: whatever follows may be a secret
	}
	if first == "me" || first == "healthz" || first == "" || first == "openai" || aiproxy.IsVersion(first) {
		return p
	}
	if first != "admin" {
		segs[0] = "***"
	}
	switch {
	case len(segs) < 2:
	case adminVerbs[segs[1]]:
		if len(segs) > 3 {
			segs = append(segs[:3], "***")
		}
	default:
		segs = append(segs[:1], "***")
	}
	return "/" + strings.Join(segs, "/")
}

// adminVerbs are the second segments of the admin routes.
var adminVerbs = map[string]bool{
	"register": true, "reset": true, "delete": true, "expire": true, "addkey": true,
	"users": true, "providers": true, "provider": true, "stats": true,
}

// cleanPath is the path the mux routes p to: rooted, without . and ..
// elements or repeated slashes, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// statusRecorder remembers the status written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.Ping(r.Context()); err != nil {
		s.log.Error("healthz", "err", err)
		httperr.Write(w, aiproxy.Errorf(aiproxy.EUNAVAILABLE, "database does not answer"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// forbidden is the one answer for unknown paths and wrong admin tokens. It
// says what the proxy serves, naming no host and nothing of the token.
func (s *Server) forbidden(w http.ResponseWriter, r *http.Request) {
	msg := forbiddenMsg
	if s.cfg.AccessToken != "" {
		msg = forbiddenAdminMsg
	}
	refuse(w, r, aiproxy.Errorf(aiproxy.EFORBIDDEN, "%s", msg))
}

const (
	forbiddenMsg = "forbidden: this proxy serves /v1/…, /openai/… and /{registered provider host}/… " +
		"with an aiproxy key, and /me; check the base URL"
	forbiddenAdminMsg = forbiddenMsg + ", and its admin routes with the admin token"
)

// refuse answers a request that will not be served. Its body, if any, is
// never read: the connection closes after the answer, so that a client
// that announced a body and sends nothing cannot hold the handler.
func refuse(w http.ResponseWriter, r *http.Request, err error) {
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	httperr.Write(w, err)
}

func (s *Server) methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Allow", allow)
		httperr.Write(w, notAllowed(r.Method, allow))
	}
}

// notAllowed is the 405 error; the caller sets Allow.
func notAllowed(method, allow string) error {
	return aiproxy.Errorf(aiproxy.EMETHOD, "method %s is not allowed here; use %s", method, allow)
}

// writeError answers err as OpenAI-shaped JSON with the status its code
// maps to. Internal errors are logged and shown only as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if httperr.Of(err).Status == http.StatusInternalServerError {
		s.log.Error("request failed", "path", aiproxy.Clip(redactPath(r.URL.Path), aiproxy.MaxPathLen), "err", err)
	}
	httperr.Write(w, err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// wantsJSON reports whether the client asked for a JSON answer.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}
