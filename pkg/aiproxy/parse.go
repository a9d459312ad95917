package aiproxy

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ValidateUserName checks the contract's rule for user names: 1 to 64
// characters of A-Z a-z 0-9 _ . @ -.
func ValidateUserName(name string) error {
	if name == "" {
		return Errorf(EINVALID, "user name must not be empty")
	}
	if len(name) > 64 {
		return Errorf(EINVALID, "user name is longer than 64 characters")
	}
	if strings.Trim(name, ".") == "" {
		// "." and ".." are path segments, not names: /register/.. would
		// name a different route.
		return Errorf(EINVALID, "user name must not be made of dots only")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '.', c == '@', c == '-':
		default:
			return Errorf(EINVALID, "user name %s may contain only A-Z a-z 0-9 _ . @ -", strconv.Quote(name))
		}
	}
	return nil
}

// ParseExpiry parses the contract's D: a duration with unit s, m, h, d or w
// ("90s", "12h", "30d") counted from now, a date YYYY-MM-DD (valid through
// that day: it ends at the next day's 00:00 UTC), or an RFC 3339 time.
func ParseExpiry(s string, now time.Time) (time.Time, error) {
	t, err := parseTimeSpec(s, now, true)
	if err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// ParseSince parses D for --since: a duration counts back from now, a date
// means that day's 00:00 UTC, or an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	return parseTimeSpec(s, now, false)
}

func parseTimeSpec(s string, now time.Time, future bool) (time.Time, error) {
	t, err := parseTimeSpecUnchecked(s, now, future)
	if err != nil {
		return time.Time{}, err
	}
	// A time outside years 0-9999 has no RFC 3339 form: it would make every
	// JSON listing of the user fail ("9999-12-31" expires in year 10000).
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, Errorf(EINVALID, "time %s is out of range: want a year from 0 to 9999 (UTC)", strconv.Quote(strings.TrimSpace(s)))
	}
	return t, nil
}

func parseTimeSpecUnchecked(s string, now time.Time, future bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, Errorf(EINVALID, "empty time: want a duration (30d, 12h) or a date (2027-01-31)")
	}
	if d, ok := parseDuration(s); ok {
		if future {
			return now.Add(d).UTC(), nil
		}
		return now.Add(-d).UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if future {
			t = t.AddDate(0, 0, 1)
		}
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, Errorf(EINVALID, "invalid time %s: want a duration (90s, 12h, 30d, 2w), a date (2027-01-31) or an RFC 3339 time", strconv.Quote(s))
}

// parseDuration reads a positive integer followed by one unit letter.
func parseDuration(s string) (time.Duration, bool) {
	if len(s) < 2 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 's':
		unit = time.Second
	case 'm':
		unit = time.Minute
	case 'h':
		unit = time.Hour
	case 'd':
		unit = 24 * time.Hour
	case 'w':
		unit = 7 * 24 * time.Hour
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n <= 0 || n > int64((1<<63-1)/unit) {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// NormalizeHost checks that h is a bare host[:port] (no scheme, path,
// userinfo, fragment, spaces or control bytes) and returns it in canonical
// form: lower case, without a trailing dot on the name.
func NormalizeHost(h string) (string, error) {
	if h == "" {
		return "", Errorf(EINVALID, "host must not be empty")
	}
	if len(h) > 253+6 {
		return "", Errorf(EINVALID, "host is too long")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_'
		if !ok {
			return "", Errorf(EINVALID, "host must be a bare host[:port], without scheme, path or spaces")
		}
	}
	name, port := h, ""
	// SplitHostPort builds an error for a host without a port, the usual
	// case: ask it only when there may be one ("[::1]" has none).
	if strings.Contains(h, ":") && !strings.HasSuffix(h, "]") {
		if host, p, err := net.SplitHostPort(h); err == nil {
			name, port = host, p
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 || p[0] == '0' {
				return "", Errorf(EINVALID, "host has an invalid port")
			}
		} else if !strings.HasPrefix(h, "[") {
			return "", Errorf(EINVALID, "host must be a bare host[:port], without scheme, path or spaces")
		}
	}
	// An IPv6 literal, and only an IPv6 literal, is in brackets: "[::1]",
	// "[::1]:8080". SplitHostPort has already removed them when a port is
	// present; without one, both must be there.
	bracketed := strings.HasPrefix(h, "[")
	if bracketed && port == "" {
		if len(name) < 2 || !strings.HasSuffix(name, "]") {
			return "", Errorf(EINVALID, "host has an invalid IPv6 address")
		}
		name = name[1 : len(name)-1]
	}
	if strings.ContainsAny(name, "[]") {
		return "", Errorf(EINVALID, "host must be a bare host[:port], without scheme, path or spaces")
	}
	if bracketed || strings.Contains(name, ":") {
		if !bracketed || !strings.Contains(name, ":") || net.ParseIP(name) == nil {
			return "", Errorf(EINVALID, "host has an invalid IPv6 address")
		}
		if lower := strings.ToLower(name); lower != name {
			name = "[" + lower + "]"
		} else {
			name = h[:len(name)+2] // h starts with "[" + name + "]"
		}
	} else {
		// Fold one trailing dot (the root label) and refuse empty labels,
		// checked after folding so that the result is itself canonical.
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
			return "", Errorf(EINVALID, "host must be a bare host[:port], without scheme, path or spaces")
		}
	}
	if port == "" {
		return name, nil
	}
	if n := len(name); len(h) == n+1+len(port) && h[:n] == name && h[n] == ':' {
		return h, nil // already canonical: no new string
	}
	return name + ":" + port, nil
}

// NormalizeBaseURL checks a provider base URL: http or https, a host, no
// userinfo, query or fragment. A trailing slash is removed.
func NormalizeBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return "", Errorf(EINVALID, "invalid base URL %s", strconv.Quote(raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", Errorf(EINVALID, "base URL %s must start with https:// or http://", strconv.Quote(raw))
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return "", Errorf(EINVALID, "base URL %s must be scheme://host[:port][/path] without user, query or fragment", strconv.Quote(raw))
	}
	host, err := NormalizeHost(u.Host)
	if err != nil {
		return "", Errorf(EINVALID, "base URL %s has an invalid host", strconv.Quote(raw))
	}
	u.Host = host
	return strings.TrimRight(u.String(), "/"), nil
}
