package aiproxy

import (
	"encoding/json"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The auth schemes a provider takes its key in (CONTRACT section 6).
const (
	AuthBearer     = "bearer"         // Authorization: Bearer KEY (OpenAI and most others)
	AuthXAPIKey    = "x-api-key"      // x-api-key: KEY (Anthropic)
	AuthAPIKey     = "api-key"        // api-key: KEY (Azure OpenAI)
	AuthGoogAPIKey = "x-goog-api-key" // x-goog-api-key: KEY (Google Gemini)
)

// DefaultAPIRoot is the API root of a provider that names none.
const DefaultAPIRoot = "/v1"

// Bounds of a provider's pinned headers.
const (
	MaxAliasLen       = 63
	MaxPinnedHeaders  = 32
	MaxHeaderValueLen = 4096
)

// ParseAuth checks an auth scheme's name (any case) and returns it in
// canonical form. Errors: EINVALID.
func ParseAuth(s string) (string, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case AuthBearer, AuthXAPIKey, AuthAPIKey, AuthGoogAPIKey:
		return v, nil
	}
	return "", Errorf(EINVALID, "invalid auth scheme %s: want bearer, x-api-key, api-key or x-goog-api-key", strconv.Quote(s))
}

// DefaultAuth is the auth scheme of a new provider: the one that host is
// known to take, else bearer. host is a normalised host[:port].
func DefaultAuth(host string) string {
	name := hostName(host)
	switch {
	case name == "api.anthropic.com":
		return AuthXAPIKey
	case strings.HasSuffix(name, ".openai.azure.com"):
		return AuthAPIKey
	case name == "generativelanguage.googleapis.com":
		return AuthGoogAPIKey
	}
	return AuthBearer
}

// DefaultAPIRootFor is the API root of a new provider: /openai/v1 for Groq,
// else /v1. host is a normalised host[:port].
func DefaultAPIRootFor(host string) string {
	if hostName(host) == "api.groq.com" {
		return "/openai/v1"
	}
	return DefaultAPIRoot
}

// hostName is host without its port.
func hostName(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		return host[:i]
	}
	return host
}

// NormalizeAlias checks a provider alias and returns it in canonical (lower
// case) form: 1 to 63 characters of a-z 0-9 . _ -, starting with a letter or
// digit, one path segment that no route of aiproxy claims (Reserved). It
// does not know the registered hosts, aliases or the admin token: the store
// and the service check those. Errors: EINVALID.
func NormalizeAlias(alias string) (string, error) {
	if alias == "" {
		return "", Errorf(EINVALID, "alias must not be empty")
	}
	if len(alias) > MaxAliasLen {
		return "", Errorf(EINVALID, "alias is longer than %d characters", MaxAliasLen)
	}
	a := strings.ToLower(alias)
	for i := 0; i < len(a); i++ {
		c := a[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok || i == 0 && (c == '.' || c == '_' || c == '-') {
			return "", Errorf(EINVALID, "alias %s must be one path segment of a-z 0-9 . _ - starting with a letter or digit", strconv.Quote(alias))
		}
	}
	if strings.HasSuffix(a, ".") || strings.Contains(a, "..") {
		return "", Errorf(EINVALID, "alias %s must not end with a dot or hold two in a row", strconv.Quote(alias))
	}
	if Reserved(a) {
		return "", Errorf(EINVALID, "alias %s is reserved: aiproxy's own routes start with it", strconv.Quote(alias))
	}
	return a, nil
}

// NormalizeAPIRoot checks an API root, the path under a base URL where a
// provider's API starts, and returns it with one leading slash and no
// trailing one ("/" for the base URL itself; "" means /). Errors: EINVALID.
func NormalizeAPIRoot(root string) (string, error) {
	r := strings.TrimSpace(root)
	if r == "" || r == "/" {
		return "/", nil
	}
	if !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	u, err := url.Parse(r)
	if err != nil || u.Scheme != "" || u.Host != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" ||
		strings.ContainsAny(r, " \\") || len(r) > 256 {
		return "", Errorf(EINVALID, "invalid API root %s: want a path such as /v1 or /openai/v1", strconv.Quote(root))
	}
	for _, seg := range strings.Split(strings.Trim(r, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", Errorf(EINVALID, "invalid API root %s: want a path such as /v1 or /openai/v1", strconv.Quote(root))
		}
	}
	return strings.TrimRight(r, "/"), nil
}

// APIURL is the provider's URL for path under its API root:
// APIURL("/models") = base URL + API root + "/models".
func (p Provider) APIURL(path string) string {
	root := p.APIRoot
	if root == "" {
		root = DefaultAPIRoot
	}
	return p.BaseURL + strings.TrimSuffix(root, "/") + path
}

// Name is how listings and model ids name the provider: its alias, or its
// host when it has none.
func (p Provider) Name() string {
	if p.Alias != "" {
		return p.Alias
	}
	return p.Host
}

// authHeaders are the headers a key can travel in, one per scheme, in
// canonical form.
var authHeaders = [...]string{"Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key"}

// SetAuth puts key in h in the provider's scheme (Authorization: Bearer
// KEY, x-api-key: KEY, api-key: KEY or x-goog-api-key: KEY; bearer for an
// empty or unknown Auth), after removing the headers of the other schemes,
// so that no other key (a user's) travels with it.
func (p Provider) SetAuth(h http.Header, key string) {
	for _, name := range authHeaders {
		delete(h, name)
	}
	switch p.Auth {
	case AuthXAPIKey:
		h["X-Api-Key"] = []string{key}
	case AuthAPIKey:
		h["Api-Key"] = []string{key}
	case AuthGoogAPIKey:
		h["X-Goog-Api-Key"] = []string{key}
	default:
		h["Authorization"] = []string{"Bearer " + key}
	}
}

// PinHeaders sets the provider's pinned headers in h, replacing what the
// client sent under those names.
func (p Provider) PinHeaders(h http.Header) {
	for name, v := range p.Headers {
		h[name] = []string{v}
	}
}

// unpinnable are the headers a provider may not pin: those that carry a key
// (the provider's scheme sets them), and those that HTTP itself or aiproxy's
// routing own.
var unpinnable = map[string]bool{
	"Authorization": true, "X-Api-Key": true, "Api-Key": true, "X-Goog-Api-Key": true,
	"Proxy-Authorization": true, "Host": true, "Content-Length": true, "Content-Type": true,
	"Transfer-Encoding": true, "Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true,
	"Upgrade": true, "Proxy-Connection": true, "Accept-Encoding": true, "Cookie": true, "X-Host-Final": true,
}

// ParseHeader reads "Name: value" (as curl -H writes it) into a canonical
// header name and its value; an empty value means "remove this header".
// Errors: EINVALID.
func ParseHeader(s string) (name, value string, err error) {
	n, v, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", Errorf(EINVALID, "header %s must be written Name: value", strconv.Quote(clipForMessage(s)))
	}
	return ValidateHeader(strings.TrimSpace(n), strings.TrimSpace(v))
}

// ValidateHeader checks one pinned header and returns its canonical name:
// a valid field name that carries no key and is not HTTP's own, and a value
// without control bytes. Errors: EINVALID.
func ValidateHeader(name, value string) (string, string, error) {
	if name == "" || !httpguts.ValidHeaderFieldName(name) {
		return "", "", Errorf(EINVALID, "invalid header name %s", strconv.Quote(clipForMessage(name)))
	}
	canon := textproto.CanonicalMIMEHeaderKey(name)
	if unpinnable[canon] {
		return "", "", Errorf(EINVALID, "header %s cannot be pinned: aiproxy sets it (keys go in the provider's --auth scheme)", canon)
	}
	if len(value) > MaxHeaderValueLen || !httpguts.ValidHeaderFieldValue(value) || strings.ContainsAny(value, "\r\n") {
		return "", "", Errorf(EINVALID, "header %s has an invalid value: printable text of at most %d bytes", canon, MaxHeaderValueLen)
	}
	return canon, value, nil
}

func clipForMessage(s string) string { return Clip(s, 64) }

// MarshalJSON writes the provider with a null alias when it has none, as
// the contract writes absent values; Headers is never null.
func (p Provider) MarshalJSON() ([]byte, error) {
	type plain Provider // without this method
	v := struct {
		plain
		Alias   *string           `json:"alias"`
		Headers map[string]string `json:"headers"`
	}{plain: plain(p), Headers: p.Headers}
	if p.Alias != "" {
		v.Alias = &p.Alias
	}
	if v.Headers == nil {
		v.Headers = map[string]string{}
	}
	return json.Marshal(v)
}
