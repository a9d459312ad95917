package server

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// firstSegment splits "/a/b/c" into "a" and "/b/c".
func firstSegment(p string) (string, string) {
	p = strings.TrimPrefix(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i:]
	}
	return p, ""
}

// bearer returns the token of an "Authorization: Bearer TOKEN" value.
func bearer(v string) (string, bool) {
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(v[len(prefix):]), true
}

// Bearer returns the token of the request's one Authorization: Bearer
// header.
func Bearer(r *http.Request) (string, bool) {
	hv := r.Header.Values("Authorization")
	if len(hv) != 1 {
		return "", false
	}
	return bearer(hv[0])
}

// keyHeaders are the headers a user key may come in, in order of
// precedence: what the OpenAI, Anthropic, Azure and Gemini SDKs send.
var keyHeaders = []string{"X-Api-Key", "Api-Key", "X-Goog-Api-Key"}

// userKey returns the user key the request presents: Authorization: Bearer
// first, then x-api-key, api-key and x-goog-api-key. Two different user
// keys, or one header given twice, are refused. A key in the query string
// never counts.
func userKey(r *http.Request) (string, error) {
	var key string
	if hv := r.Header.Values("Authorization"); len(hv) > 0 {
		k, ok := bearer(hv[0])
		if len(hv) > 1 || !ok {
			return "", aiproxy.InvalidKey()
		}
		key = k
	}
	for _, name := range keyHeaders {
		hv := r.Header.Values(name)
		if len(hv) > 1 {
			return "", aiproxy.InvalidKey()
		}
		if len(hv) == 0 || !strings.HasPrefix(hv[0], "sk-cfw") {
			continue // another service's key: not aiproxy's to read
		}
		switch v := strings.TrimSpace(hv[0]); {
		case key == "":
			key = v
		case v != key:
			return "", aiproxy.InvalidKey()
		}
	}
	return key, nil
}

// requestID returns the id of r: the client's X-Request-Id when it is sane
// (1 to 128 characters of A-Z a-z 0-9 . _ -), else a new random one.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); saneID(id) {
		return id
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

func saneID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
