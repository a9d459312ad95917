package aiproxy_test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func TestErrorCodeAndMessage(t *testing.T) {
	t.Parallel()
	conflict := aiproxy.Errorf(aiproxy.ECONFLICT, "user %q already exists", "bob")
	tests := []struct {
		name        string
		err         error
		wantCode    string
		wantMessage string
	}{
		{"nil", nil, "", ""},
		{"domain error", conflict, aiproxy.ECONFLICT, `user "bob" already exists`},
		{"wrapped once", fmt.Errorf("create user: %w", conflict), aiproxy.ECONFLICT, `user "bob" already exists`},
		{"wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", conflict)), aiproxy.ECONFLICT, `user "bob" already exists`},
		{"joined", errors.Join(io.EOF, conflict), aiproxy.ECONFLICT, `user "bob" already exists`},
		{"internal", io.ErrUnexpectedEOF, aiproxy.EINTERNAL, "internal error"},
		{"internal wrapping a secret", fmt.Errorf("dial with key sk-secret: %w", io.EOF), aiproxy.EINTERNAL, "internal error"},
		{"formatted with %v loses the code", fmt.Errorf("x: %v", conflict), aiproxy.EINTERNAL, "internal error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := aiproxy.ErrorCode(tc.err); got != tc.wantCode {
				t.Errorf("ErrorCode(%v) = %q, want %q", tc.err, got, tc.wantCode)
			}
			if got := aiproxy.ErrorMessage(tc.err); got != tc.wantMessage {
				t.Errorf("ErrorMessage(%v) = %q, want %q", tc.err, got, tc.wantMessage)
			}
		})
	}
}

func TestErrorf(t *testing.T) {
	t.Parallel()
	err := aiproxy.Errorf(aiproxy.ENOTFOUND, "provider %s not found", "api.groq.com")
	if err.Code != aiproxy.ENOTFOUND || err.Message != "provider api.groq.com not found" || err.Error() != err.Message {
		t.Errorf("Errorf() = %#v (Error() %q), want code not_found and the formatted message", err, err.Error())
	}
	var target *aiproxy.Error
	if !errors.As(fmt.Errorf("wrap: %w", err), &target) || target != err {
		t.Errorf("errors.As(wrapped *Error) did not find the *Error")
	}
}

func TestUser_Expired(t *testing.T) {
	t.Parallel()
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		expires *time.Time
		now     time.Time
		want    bool
	}{
		{"never", nil, at, false},
		{"before", &at, at.Add(-time.Millisecond), false},
		{"exactly at expiry", &at, at, true},
		{"after", &at, at.Add(time.Millisecond), true},
		{"same instant in another zone", &at, at.In(time.FixedZone("X", -5*3600)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := aiproxy.User{ExpiresAt: tc.expires}
			if got := u.Expired(tc.now); got != tc.want {
				t.Errorf("Expired(%v) = %v, want %v", tc.now, got, tc.want)
			}
		})
	}
}
