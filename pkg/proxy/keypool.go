package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// A provider key that the upstream refuses rests (CONTRACT section 5): one
// answered 429 for its Retry-After (60 s without one), one answered 401 or
// 403 until an admin touches the provider. Requests go to the provider's
// other keys meanwhile, and a request refused that way before any byte
// reached the client is sent once to each other usable key, its body
// replayed from memory. This is the only retry aiproxy makes (STR-5).

// defaultRest is how long a key answered 429 without Retry-After rests.
const defaultRest = 60 * time.Second

// KeyStates persists key states, so that `provider list` in another process
// shows them. It is called off the request path.
type KeyStates interface {
	// RestKey marks the provider key with id resting until until, or
	// rejected (until an admin touches the provider) when until is zero,
	// unless the provider was touched since version.
	RestKey(ctx context.Context, id, version int64, until time.Time) error
}

// restState is the in-memory state of one resting or rejected key.
type restState struct {
	until    time.Time // zero: rejected
	provider int64     // the provider's version when it was refused
}

// keyPool remembers which keys rest. The store's state, loaded with the
// provider, covers what other processes (and earlier runs) saw; this
// covers what this process saw since, until the provider is reloaded.
type keyPool struct {
	mu     sync.Mutex
	rested map[restKey]restState
	store  KeyStates
	now    func() time.Time
	// resting, when set, is told how many keys of a host this process
	// saw refused and not yet usable again (metrics).
	resting func(host string, n int)
}

func newKeyPool(store KeyStates, now func() time.Time, resting func(string, int)) *keyPool {
	return &keyPool{rested: make(map[restKey]restState), store: store, now: now, resting: resting}
}

// usable returns the provider's keys that may be used now, starting at
// start (round robin), and when none is, the error to answer with: 429
// rate_limited with the soonest wake when some key only rests, else 502.
func (kp *keyPool) usable(prov aiproxy.Provider, start int, now time.Time) ([]string, error) {
	n := len(prov.Keys)
	out := make([]string, 0, n)
	var wake time.Time
	kp.mu.Lock()
	for i := range n {
		k := prov.Keys[(start+i)%n]
		st, ok := kp.rested[restKey{prov.Host, k}]
		if ok && st.provider != prov.Version {
			delete(kp.rested, restKey{prov.Host, k}) // the provider was touched since
			ok = false
		}
		if !ok {
			st = stateOf(prov, (start+i)%n)
		}
		switch {
		case st.until.IsZero() && st.provider < 0:
			out = append(out, k) // ok
		case st.until.IsZero():
			// rejected until an admin touches the provider
		case !st.until.After(now):
			out = append(out, k)
		case wake.IsZero() || st.until.Before(wake):
			wake = st.until
		}
	}
	kp.mu.Unlock()
	if len(out) > 0 {
		return out, nil
	}
	if wake.IsZero() {
		return nil, aiproxy.Errorf(aiproxy.EUPSTREAM, "every key of provider %s was refused by the provider; an admin must check them", prov.Host)
	}
	return nil, &restingError{wake: wake.Sub(now), host: prov.Host}
}

// restKey is the key of rested, by host and provider key: one key may
// serve two providers. (A struct, not the two joined: a lookup for each key
// of every request then allocates nothing.)
type restKey struct{ host, key string }

// stateOf is the stored state of the provider's i-th key; provider -1
// means usable.
func stateOf(prov aiproxy.Provider, i int) restState {
	if len(prov.KeyStates) == len(prov.Keys) {
		switch s := prov.KeyStates[i]; s.State {
		case aiproxy.KeyResting:
			if s.Until != nil {
				return restState{until: *s.Until, provider: prov.Version}
			}
		case aiproxy.KeyRejected:
			return restState{provider: prov.Version}
		}
	}
	return restState{provider: -1}
}

// rest records that the upstream refused key with res.
func (kp *keyPool) rest(prov aiproxy.Provider, key string, res *http.Response) {
	var until time.Time
	if res.StatusCode == http.StatusTooManyRequests {
		d := defaultRest
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s >= 0 {
			d = time.Duration(s) * time.Second
		}
		until = kp.now().Add(d)
	}
	kp.mu.Lock()
	kp.rested[restKey{prov.Host, key}] = restState{until: until, provider: prov.Version}
	n := 0
	for _, k := range prov.Keys {
		if st, ok := kp.rested[restKey{prov.Host, k}]; ok && (st.until.IsZero() || st.until.After(kp.now())) {
			n++
		}
	}
	kp.mu.Unlock()
	if kp.resting != nil {
		kp.resting(prov.Host, n)
	}
	if kp.store == nil || len(prov.KeyStates) != len(prov.Keys) {
		return
	}
	for i, k := range prov.Keys {
		if k == key {
			id := prov.KeyStates[i].ID
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = kp.store.RestKey(ctx, id, prov.Version, until) // a failure only loses the state for other processes
			}()
		}
	}
}

// restingError is the answer when every key of a provider rests.
type restingError struct {
	wake time.Duration
	host string
}

func (e *restingError) Error() string {
	return "every key of provider " + e.host + " is resting after the provider's rate limit"
}

// retryAfter is Retry-After for a wait of d: whole seconds, rounded up,
// at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}

// refusedKey reports whether the upstream refused the key itself.
func refusedKey(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusUnauthorized || status == http.StatusForbidden
}

// poolTransport sends a request with the exchange's key and, when the
// upstream refuses that key, once more with each other usable key.
type poolTransport struct {
	next http.RoundTripper
	pool *keyPool
}

func (t *poolTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	x := exchangeOf(req)
	for i, key := range x.keys {
		if i > 0 {
			// A new request for the new key: the transport may still hold
			// the one it answered.
			req = req.Clone(req.Context())
			req.Body = io.NopCloser(bytes.NewReader(x.body))
		}
		x.key = key
		x.prov.SetAuth(req.Header, key)
		res, err := t.next.RoundTrip(req)
		if err != nil || !refusedKey(res.StatusCode) {
			return res, err
		}
		if res.StatusCode == http.StatusTooManyRequests || t.keyRefused(req.Context(), x.prov, key) {
			t.pool.rest(x.prov, key, res)
		}
		if i == len(x.keys)-1 || x.reqBody != nil {
			return res, nil // the last key, or a body that streamed through
		}
		// Nothing of this answer reached the client: drop it.
		_, _ = io.CopyN(io.Discard, res.Body, 64<<10)
		res.Body.Close()
	}
	return nil, errors.New("no usable provider key") // prepare never lets x.keys be empty
}

// keyRefused tells a key the provider refuses from a request it refuses
// (a model or an endpoint the account may not use, OpenAI's "insufficient
// permissions"): a 401 or 403 rejects the key only when the provider's
// model list, asked with that key, is refused too. Otherwise any user could
// take every key out of service with one request the provider forbids.
func (t *poolTransport) keyRefused(ctx context.Context, prov aiproxy.Provider, key string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, prov.APIURL("/models"), nil)
	if err != nil {
		return false
	}
	prov.PinHeaders(req.Header)
	prov.SetAuth(req.Header, key)
	res, err := t.next.RoundTrip(req)
	if err != nil {
		return false
	}
	_, _ = io.CopyN(io.Discard, res.Body, 64<<10)
	res.Body.Close()
	return res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden
}
