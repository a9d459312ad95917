// Package audit carries who is making an admin change, and what change,
// through a context: the transport (the CLI, the HTTP admin routes, POST
// /me/reset) says where the change comes from, the service says what it is,
// and the store's write transaction records it beside the change itself.
// A change that no one names is not recorded; a change a transport names
// but the service does not (an operation added to a transport first) is
// recorded under the transport's fallback action.
//
// It imports nothing from pkg/, so the store, the service and both
// transports may use it.
package audit

import (
	"context"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Source kinds.
const (
	KindCLI  = "cli"
	KindHTTP = "http"
)

// Results other than OK are "refused: CODE" (the aiproxy error code, such
// as "refused: not_found") or "error" for an internal failure.
const OK = "ok"

// Source is where a change comes from: the CLI and the OS user who ran it,
// or HTTP and the client's address.
type Source struct {
	Kind  string
	Actor string
}

// CLI is the source of a command run by the current OS user.
func CLI() Source {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = "uid " + strconv.Itoa(os.Getuid())
	}
	return Source{Kind: KindCLI, Actor: name}
}

// HTTP is the source of a request from remoteAddr (http.Request.RemoteAddr:
// the connection's address, never a header a client can forge).
func HTTP(remoteAddr string) Source {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	return Source{Kind: KindHTTP, Actor: host}
}

// Record is one row of the audit log. It never holds a key, a token or a
// database address: targets are user names, hosts and model names.
type Record struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Result string    `json:"result"`
}

// Entry is the change in progress in one context. The store reads it in
// its write transaction; the service marks its action and target.
type Entry struct {
	mu       sync.Mutex
	source   Source
	action   string
	target   string
	at       time.Time // zero: the time of the write
	recorded bool
}

type ctxKey struct{}

// NewContext returns ctx carrying a new change from src. A transport calls
// it once per command or request; fallbackAction and fallbackTarget name
// the change until the service names it (Begin), so that an operation the
// service does not yet name is still recorded. An empty fallbackAction
// records nothing until Begin.
func NewContext(ctx context.Context, src Source, fallbackAction, fallbackTarget string) context.Context {
	return context.WithValue(ctx, ctxKey{}, &Entry{source: src, action: fallbackAction, target: Clean(fallbackTarget)})
}

// Without returns ctx without a change, for work that is not an admin
// change (usage records, retention) started from a context that holds one.
func Without(ctx context.Context) context.Context {
	if FromContext(ctx) == nil {
		return ctx
	}
	return context.WithValue(ctx, ctxKey{}, (*Entry)(nil))
}

// FromContext returns the change in ctx, or nil.
func FromContext(ctx context.Context) *Entry {
	e, _ := ctx.Value(ctxKey{}).(*Entry)
	return e
}

// Begin names the change that ctx's caller is about to make: action (such
// as "user.create") on target, at time at. It returns ctx carrying the
// change: the transport's, renamed, or a new one without a source when no
// transport set one (a test or a program calling the service directly).
func Begin(ctx context.Context, action, target string, at time.Time) (context.Context, *Entry) {
	e := FromContext(ctx)
	if e == nil {
		e = &Entry{}
		ctx = context.WithValue(ctx, ctxKey{}, e)
	}
	e.mu.Lock()
	e.action, e.target, e.at, e.recorded = action, Clean(target), at, false
	e.mu.Unlock()
	return ctx, e
}

// SetTarget changes the target of e, for a change whose target is known
// only once it is under way (a user resetting their own key).
func (e *Entry) SetTarget(target string) {
	e.mu.Lock()
	e.target = Clean(target)
	e.mu.Unlock()
}

// Pending returns the record to write with result, and ok true, when e
// names a change not yet recorded. now is used when e has no time of its
// own.
func (e *Entry) Pending(result string, now time.Time) (r Record, ok bool) {
	if e == nil {
		return Record{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.action == "" || e.recorded {
		return Record{}, false
	}
	at := e.at
	if at.IsZero() {
		at = now
	}
	return Record{Time: at.UTC(), Source: e.source.Kind, Actor: e.source.Actor,
		Action: e.action, Target: e.target, Result: result}, true
}

// Done marks e as recorded: later writes under the same context add no row.
func (e *Entry) Done() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.recorded = true
	e.mu.Unlock()
}

// Recorded reports whether e has been written.
func (e *Entry) Recorded() bool {
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recorded
}

// MaxTarget bounds a target (a user name or host is far shorter).
const MaxTarget = 256

// Clean makes s fit to store as a target: at most MaxTarget bytes of
// printable text, and anything shaped like a key (sk-…, a long token)
// reduced to its first characters, since a mistyped command may put a key
// where a name goes.
func Clean(s string) string {
	if len(s) > MaxTarget {
		s = s[:MaxTarget]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if looksLikeKey(s) {
		return s[:6] + "…"
	}
	return s
}

// looksLikeKey reports a word that starts like a user or provider key
// (sk-, gsk_, AIza), or a single word of 36 or more characters without the
// separators that user names, hosts and model names use.
func looksLikeKey(s string) bool {
	for _, p := range []string{"sk-", "gsk_", "AIza"} {
		if strings.HasPrefix(s, p) && len(s) > 12 {
			return true
		}
	}
	return len(s) >= 36 && !strings.ContainsAny(s, " ./@:")
}

// Result is the result of a change that ended with err: OK, "refused:
// CODE" for an error the caller may see (code is its aiproxy error code),
// or "error" for anything else.
func Result(err error, code string) string {
	switch {
	case err == nil:
		return OK
	case code == "" || code == "internal":
		return "error"
	}
	return "refused: " + code
}
