package aiproxy

// reservedSegments are the first path segments that aiproxy's own routes
// claim (CONTRACT section 6): never a provider alias, never the admin token.
var reservedSegments = map[string]bool{
	"openai": true, "me": true, "admin": true, "healthz": true, "metrics": true, "dashboard": true,
}

// Reserved reports whether seg is a first path segment that routing claims
// before any provider or admin token: openai, v followed by digits, me,
// admin, healthz, metrics and dashboard. The router, serve's check of the
// admin token and the check of provider aliases all ask this one function.
func Reserved(seg string) bool {
	return reservedSegments[seg] || IsVersion(seg)
}

// IsVersion reports whether seg is "v" followed by one or more digits.
func IsVersion(seg string) bool {
	if len(seg) < 2 || seg[0] != 'v' {
		return false
	}
	for i := 1; i < len(seg); i++ {
		if seg[i] < '0' || seg[i] > '9' {
			return false
		}
	}
	return true
}
