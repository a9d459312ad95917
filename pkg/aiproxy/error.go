// Package aiproxy holds the domain types shared by every other package:
// users, providers, usage records, and the one error type whose messages are
// safe to show to a caller.
package aiproxy

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status and one CLI message; anything that
// is not an *Error is internal and shown only as "internal error".
const (
	EINVALID      = "invalid"      // bad input: 400
	ENOTFOUND     = "not_found"    // missing user or provider: 404
	ECONFLICT     = "conflict"     // already exists: 409
	EUNAUTHORIZED = "unauthorized" // missing or wrong key: 401
	EEXPIRED      = "expired"      // key past its expiry: 401
	EFORBIDDEN    = "forbidden"    // not allowed: 403
	EUNAVAILABLE  = "unavailable"  // database busy or read-only: 503
	EINTERNAL     = "internal"     // everything else: 500

	// Codes of the proxy path.
	ETOOLARGE        = "too_large"        // request body over --max-body: 413
	EUNKNOWNPROVIDER = "unknown_provider" // provider not registered: 404
	EMETHOD          = "method"           // method not allowed on a route: 405
	ERATELIMITED     = "rate_limited"     // aiproxy's own throttle: 429
	EUPSTREAM        = "upstream"         // provider unreachable or unusable: 502
	ETIMEOUT         = "timeout"          // provider sent no headers in time: 504

	// Codes of per-user limits (CONTRACT section 5).
	ELIMIT     = "limit"      // over --rpm, --tpm or --concurrent: 429 rate_limit_exceeded
	EQUOTA     = "quota"      // over --tokens or --spend: 429 insufficient_quota
	EMODEL     = "model"      // model not in --models: 403 model_not_allowed
	ENOTPRICED = "not_priced" // spend limit and a model without a price: 403 model_not_priced
)

// Error is an error whose Message may be shown to the caller as is.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err if it is (or wraps) an *Error, else
// EINTERNAL. A nil error has no code.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of err: the message of an
// *Error, or "internal error" for anything else.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// InvalidKey is the one answer for every refused user key — missing,
// malformed, unknown, deleted or replaced — so a refusal tells nothing about
// why (KEY-3).
func InvalidKey() *Error {
	return &Error{Code: EUNAUTHORIZED, Message: "invalid API key: send Authorization: Bearer sk-cfw…"}
}
