package aiproxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// now is the fixed clock of these tests, deliberately not in UTC and not on
// a day boundary, so that results that forget .UTC() or round to a day show.
var now = time.Date(2026, 3, 14, 15, 9, 26, 535_000_000, time.FixedZone("CET", 3600))

func TestParseExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want time.Time
	}{
		{"seconds", "90s", now.Add(90 * time.Second).UTC()},
		{"minutes", "45m", now.Add(45 * time.Minute).UTC()},
		{"hours", "12h", now.Add(12 * time.Hour).UTC()},
		{"days", "30d", now.Add(30 * 24 * time.Hour).UTC()},
		{"weeks", "2w", now.Add(14 * 24 * time.Hour).UTC()},
		{"surrounding space", " 1d\n", now.Add(24 * time.Hour).UTC()},
		{"largest weeks", "15250w", now.Add(15250 * 7 * 24 * time.Hour).UTC()},
		{"date is valid through that day", "2027-01-31", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"date at year end", "2026-12-31", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"leap day", "2028-02-29", time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC)},
		{"RFC 3339 UTC", "2027-01-31T10:00:00Z", time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC)},
		{"RFC 3339 with offset", "2027-01-31T10:00:00+02:00", time.Date(2027, 1, 31, 8, 0, 0, 0, time.UTC)},
		{"RFC 3339 negative offset crosses day", "2027-01-31T22:30:00-05:00", time.Date(2027, 2, 1, 3, 30, 0, 0, time.UTC)},
		{"RFC 3339 fraction", "2027-01-31T10:00:00.250Z", time.Date(2027, 1, 31, 10, 0, 0, 250_000_000, time.UTC)},
		{"last representable date", "9999-12-30", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.ParseExpiry(tc.in, now)
			if err != nil {
				t.Fatalf("ParseExpiry(%q) error = %v, want nil", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseExpiry(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
			if got.Location() != time.UTC {
				t.Errorf("ParseExpiry(%q) location = %v, want UTC", tc.in, got.Location())
			}
		})
	}
}

// invalidTimes are refused by both ParseExpiry and ParseSince.
var invalidTimes = []struct{ name, in string }{
	{"empty", ""},
	{"blank", "   "},
	{"number without unit", "30"},
	{"unit without number", "d"},
	{"negative", "-5d"},
	{"zero", "0d"},
	{"zero seconds", "0s"},
	{"unknown unit y", "30y"},
	{"unknown unit ms", "30ms"},
	{"upper-case unit", "30D"},
	{"go duration", "1h30m"},
	{"fraction", "1.5d"},
	{"inner space", "30 d"},
	{"hex", "0x10d"},
	{"month 13", "2027-13-01"},
	{"day 32", "2027-01-32"},
	{"february 29 in a common year", "2027-02-29"},
	{"short date", "2027-1-31"},
	{"US date", "01/31/2027"},
	{"RFC 3339 without zone", "2027-01-31T10:00:00"},
	{"overflowing weeks", "99999999999999w"},
	{"overflowing seconds", "99999999999999999999s"},
	{"one week past the Duration range", "15251w"},
	{"date whose next day is year 10000", "9999-12-31"},
	{"RFC 3339 in year 10000 once in UTC", "9999-12-31T23:30:00-01:00"},
	{"RFC 3339 in year -1 once in UTC", "0000-01-01T00:30:00+01:00"},
	{"NUL", "30d\x00"},
	{"words", "tomorrow"},
}

func TestParseExpiry_Invalid(t *testing.T) {
	t.Parallel()
	for _, tc := range invalidTimes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.ParseExpiry(tc.in, now)
			if code := aiproxy.ErrorCode(err); code != aiproxy.EINVALID {
				t.Errorf("ParseExpiry(%q) = %v, %v; want error code EINVALID, got %q", tc.in, got, err, code)
			}
			if !got.IsZero() {
				t.Errorf("ParseExpiry(%q) time = %v on error, want zero", tc.in, got)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want time.Time
	}{
		{"seconds back", "90s", now.Add(-90 * time.Second).UTC()},
		{"hours back", "12h", now.Add(-12 * time.Hour).UTC()},
		{"days back", "30d", now.Add(-30 * 24 * time.Hour).UTC()},
		{"weeks back", "2w", now.Add(-14 * 24 * time.Hour).UTC()},
		{"date is that day's start", "2026-03-01", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
		{"RFC 3339 with offset", "2026-03-01T10:00:00+02:00", time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)},
		{"last date", "9999-12-31", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.ParseSince(tc.in, now)
			if err != nil {
				t.Fatalf("ParseSince(%q) error = %v, want nil", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseSince(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
	for _, tc := range invalidTimes {
		if tc.in == "9999-12-31" {
			continue // valid as a start: it does not move to the next day
		}
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := aiproxy.ParseSince(tc.in, now); aiproxy.ErrorCode(err) != aiproxy.EINVALID {
				t.Errorf("ParseSince(%q) error = %v, want EINVALID", tc.in, err)
			}
		})
	}
}

func TestParseExpiry_MessageQuotesInput(t *testing.T) {
	t.Parallel()
	_, err := aiproxy.ParseExpiry("30y", now)
	if msg := aiproxy.ErrorMessage(err); !strings.Contains(msg, `"30y"`) {
		t.Errorf("ParseExpiry(%q) message = %q, want it to quote the input", "30y", msg)
	}
	// A control byte in the input must not reach a one-line CLI error raw.
	_, err = aiproxy.ParseExpiry("3\n0y", now)
	if msg := aiproxy.ErrorMessage(err); strings.ContainsAny(msg, "\n\r") {
		t.Errorf("ParseExpiry message %q contains a raw line break", msg)
	}
}

func TestValidateUserName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"one letter", "a", true},
		{"64 characters", strings.Repeat("x", 64), true},
		{"every allowed kind", "jan.lay@x-y_z", true},
		{"digits and upper case", "Bob42", true},
		{"only punctuation", "._@-", true},
		{"empty", "", false},
		{"65 characters", strings.Repeat("x", 65), false},
		{"space", "jan lay", false},
		{"slash", "jan/lay", false},
		{"backslash", `jan\lay`, false},
		{"dot dot slash", "../etc", false},
		{"unicode letter", "jürgen", false},
		{"unicode look-alike", "аdmin", false}, // Cyrillic а
		{"newline", "jan\nlay", false},
		{"trailing newline", "jan\n", false},
		{"NUL", "jan\x00", false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"dots and a letter", "..a", true},
		{"tab", "\tjan", false},
		{"plus", "jan+1", false},
		{"colon", "jan:lay", false},
		{"percent", "jan%20", false},
		{"question mark", "jan?x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := aiproxy.ValidateUserName(tc.in)
			if tc.ok && err != nil {
				t.Errorf("ValidateUserName(%q) error = %v, want nil", tc.in, err)
			}
			if !tc.ok && aiproxy.ErrorCode(err) != aiproxy.EINVALID {
				t.Errorf("ValidateUserName(%q) error = %v, want EINVALID", tc.in, err)
			}
			if err != nil && strings.ContainsAny(aiproxy.ErrorMessage(err), "\n\r\x00") {
				t.Errorf("ValidateUserName(%q) message %q contains a raw control byte", tc.in, aiproxy.ErrorMessage(err))
			}
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"plain", "api.openai.com", "api.openai.com"},
		{"case folded", "API.OpenAI.com", "api.openai.com"},
		{"trailing dot folded", "api.groq.com.", "api.groq.com"},
		{"case and dot", "API.Groq.COM.", "api.groq.com"},
		{"port kept", "localhost:8080", "localhost:8080"},
		{"dot before port", "Example.COM.:443", "example.com:443"},
		{"IPv4", "127.0.0.1", "127.0.0.1"},
		{"IPv4 with port", "127.0.0.1:11434", "127.0.0.1:11434"},
		{"IPv6 with port", "[::1]:8080", "[::1]:8080"},
		{"IPv6 bare", "[::1]", "[::1]"},
		{"IPv6 upper case", "[FE80::ABCD]:443", "[fe80::abcd]:443"},
		{"IPv4-mapped IPv6", "[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"},
		{"underscore", "my_host", "my_host"},
		{"single label", "ollama", "ollama"},
		{"highest port", "x:65535", "x:65535"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.NormalizeHost(tc.in)
			if err != nil {
				t.Fatalf("NormalizeHost(%q) error = %v, want nil", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("NormalizeHost(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again, err := aiproxy.NormalizeHost(got); err != nil || again != got {
				t.Errorf("NormalizeHost(%q) = %q, %v; want it unchanged", got, again, err)
			}
		})
	}
}

func TestNormalizeHost_Invalid(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"scheme", "http://x"},
		{"path", "x/y"},
		{"userinfo", "a@b"},
		{"fragment", "a#b"},
		{"query", "a?b"},
		{"space", "a b"},
		{"CRLF", "\r\n"},
		{"header injection", "x\r\nHost: evil"},
		{"NUL", "x\x00"},
		{"tab", "x\ty"},
		{"percent", "x%2fy"},
		{"backslash", `x\y`},
		{"port zero", "x:0"},
		{"port too high", "x:99999"},
		{"port leading zero", "x:080"},
		{"port sign", "x:+80"},
		{"port not a number", "x:http"},
		{"empty port", "x:"},
		{"only port", ":80"},
		{"dot dot", ".."},
		{"single dot", "."},
		{"leading dot", ".x"},
		{"empty label", "a..b"},
		{"two trailing dots", "a.."},
		{"two trailing dots with port", "a..:80"},
		{"too many colons", "a:b:c"},
		{"IPv6 without brackets", "::1"},
		{"IPv6 unclosed", "[::1"},
		{"IPv6 bad", "[::g]"},
		{"IPv6 zone", "[fe80::1%25eth0]"},
		{"empty brackets", "[]"},
		{"empty brackets with port", "[]:80"},
		{"IPv4 in brackets", "[1.2.3.4]"},
		{"IPv4 in brackets with port", "[1.2.3.4]:80"},
		{"name in brackets", "[a]"},
		{"stray closing bracket", "a]b"},
		{"stray opening bracket", "a[b"},
		{"lone bracket", "]"},
		{"bracket after IPv6", "[::1]]"},
		{"junk after IPv6", "[::1]x:80"},
		{"unicode", "exämple.com"},
		{"too long", strings.Repeat("a", 260)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.NormalizeHost(tc.in)
			if aiproxy.ErrorCode(err) != aiproxy.EINVALID {
				t.Errorf("NormalizeHost(%q) = %q, %v; want EINVALID", tc.in, got, err)
			}
		})
	}
}

func TestNormalizeBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"https host", "https://api.groq.com", "https://api.groq.com"},
		{"trailing slash removed", "https://api.groq.com/", "https://api.groq.com"},
		{"path kept", "https://api.groq.com/openai/v1/", "https://api.groq.com/openai/v1"},
		{"http and port", "http://127.0.0.1:11434", "http://127.0.0.1:11434"},
		{"scheme and host case folded", "HTTPS://API.Groq.COM/OpenAI", "https://api.groq.com/OpenAI"},
		{"host trailing dot folded", "https://api.groq.com./v1", "https://api.groq.com/v1"},
		{"IPv6", "http://[::1]:8080/v1", "http://[::1]:8080/v1"},
		{"escaped path kept", "https://x.com/a%2Fb", "https://x.com/a%2Fb"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.NormalizeBaseURL(tc.in)
			if err != nil {
				t.Fatalf("NormalizeBaseURL(%q) error = %v, want nil", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("NormalizeBaseURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again, err := aiproxy.NormalizeBaseURL(got); err != nil || again != got {
				t.Errorf("NormalizeBaseURL(%q) = %q, %v; want it unchanged", got, again, err)
			}
		})
	}
}

func TestNormalizeBaseURL_Invalid(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"no scheme", "api.groq.com"},
		{"ftp", "ftp://api.groq.com"},
		{"file", "file:///etc/passwd"},
		{"opaque", "https:api.groq.com"},
		{"no host", "https:///v1"},
		{"userinfo", "https://user:pass@api.groq.com"},
		{"query", "https://api.groq.com/v1?x=1"},
		{"empty query", "https://api.groq.com/v1?"},
		{"fragment", "https://api.groq.com/v1#x"},
		{"bad port", "https://api.groq.com:99999"},
		{"port zero", "https://api.groq.com:0"},
		{"empty label", "https://a..b"},
		{"space", "https://api groq.com"},
		{"control byte", "https://api.groq.com/\x7f"},
		{"newline", "https://api.groq.com/\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := aiproxy.NormalizeBaseURL(tc.in)
			if aiproxy.ErrorCode(err) != aiproxy.EINVALID {
				t.Errorf("NormalizeBaseURL(%q) = %q, %v; want EINVALID", tc.in, got, err)
			}
		})
	}
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"api.openai.com", "API.Groq.COM.", "localhost:8080", "[::1]:8080", "[::1]",
		"127.0.0.1", "x:0", "x:99999", "x:", "..", "a..", "a..:80", "a]b", "[1.2.3.4]",
		"http://x", "x/y", "a@b", "a#b", "a b", "\r\n", "", "[::ffff:1.2.3.4]:443", "_:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := aiproxy.NormalizeHost(in)
		if err != nil {
			if aiproxy.ErrorCode(err) != aiproxy.EINVALID {
				t.Fatalf("NormalizeHost(%q) error code = %q, want EINVALID", in, aiproxy.ErrorCode(err))
			}
			return
		}
		if out == "" {
			t.Fatalf("NormalizeHost(%q) = \"\" without error", in)
		}
		again, err := aiproxy.NormalizeHost(out)
		if err != nil || again != out {
			t.Fatalf("NormalizeHost(%q) = %q, but NormalizeHost(%q) = %q, %v", in, out, out, again, err)
		}
		if out != strings.ToLower(out) {
			t.Fatalf("NormalizeHost(%q) = %q is not lower case", in, out)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c == '/' || c == '@' || c == '#' || c == '?' || c == '%' || c == '\\' || c <= ' ' || c >= 0x7f {
				t.Fatalf("NormalizeHost(%q) = %q contains %q", in, out, c)
			}
		}
		if !strings.EqualFold(strings.ReplaceAll(out, ".", ""), strings.ReplaceAll(strings.Trim(in, "[]"), ".", "")) &&
			!strings.HasPrefix(out, "[") {
			t.Fatalf("NormalizeHost(%q) = %q changed more than case and dots", in, out)
		}
	})
}

func FuzzParseExpiry(f *testing.F) {
	for _, s := range []string{
		"90s", "12h", "30d", "2w", "2027-01-31", "2027-01-31T10:00:00+02:00", "", "30", "d",
		"-5d", "0d", "30y", "2027-13-01", "99999999999999w", "15250w", "9999-12-31",
		"9999-12-31T23:30:00-01:00", "+5d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, parse := range []func(string, time.Time) (time.Time, error){aiproxy.ParseExpiry, aiproxy.ParseSince} {
			got, err := parse(in, now)
			if err != nil {
				if aiproxy.ErrorCode(err) != aiproxy.EINVALID || !got.IsZero() {
					t.Fatalf("parse(%q) = %v, %v; want zero time and EINVALID", in, got, err)
				}
				continue
			}
			if got.Location() != time.UTC {
				t.Fatalf("parse(%q) = %v, not in UTC", in, got)
			}
			// Every accepted time must have an RFC 3339 (and JSON) form.
			if _, err := got.MarshalJSON(); err != nil {
				t.Fatalf("parse(%q) = %v: MarshalJSON error = %v", in, got, err)
			}
		}
	})
}
