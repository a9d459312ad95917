// Package httperr is the one table from aiproxy's error codes to what an HTTP
// client sees: the status and the OpenAI error body's code and type. The
// proxy, the admin routes and /me all answer errors through it.
package httperr

import (
	"net/http"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/openai"
)

// Answer is the HTTP form of an error code.
type Answer struct {
	Status int
	Code   string // the OpenAI error body's "code"
	Type   string // the OpenAI error body's "type"
}

var table = map[string]Answer{
	aiproxy.EINVALID:         {http.StatusBadRequest, "invalid_request", "invalid_request_error"},
	aiproxy.EUNAUTHORIZED:    {http.StatusUnauthorized, "invalid_api_key", "authentication_error"},
	aiproxy.EEXPIRED:         {http.StatusUnauthorized, "key_expired", "authentication_error"},
	aiproxy.EFORBIDDEN:       {http.StatusForbidden, "forbidden", "permission_error"},
	aiproxy.ENOTFOUND:        {http.StatusNotFound, "not_found", "invalid_request_error"},
	aiproxy.EUNKNOWNPROVIDER: {http.StatusNotFound, "unknown_provider", "invalid_request_error"},
	aiproxy.EMETHOD:          {http.StatusMethodNotAllowed, "method_not_allowed", "invalid_request_error"},
	aiproxy.ECONFLICT:        {http.StatusConflict, "conflict", "invalid_request_error"},
	aiproxy.ETOOLARGE:        {http.StatusRequestEntityTooLarge, "request_too_large", "invalid_request_error"},
	aiproxy.ERATELIMITED:     {http.StatusTooManyRequests, "rate_limited", "rate_limit_error"},
	aiproxy.EUPSTREAM:        {http.StatusBadGateway, "upstream_unreachable", "api_error"},
	aiproxy.ETIMEOUT:         {http.StatusGatewayTimeout, "upstream_timeout", "api_error"},
	aiproxy.EUNAVAILABLE:     {http.StatusServiceUnavailable, "unavailable", "api_error"},
	aiproxy.ELIMIT:           {http.StatusTooManyRequests, "rate_limit_exceeded", "rate_limit_error"},
	aiproxy.EQUOTA:           {http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota"},
	aiproxy.EMODEL:           {http.StatusForbidden, "model_not_allowed", "permission_error"},
	aiproxy.ENOTPRICED:       {http.StatusForbidden, "model_not_priced", "permission_error"},
}

var internal = Answer{http.StatusInternalServerError, "internal_error", "api_error"}

// Of returns the answer for err; anything that is not an *aiproxy.Error with
// a known code is a 500 internal_error.
func Of(err error) Answer {
	if a, ok := table[aiproxy.ErrorCode(err)]; ok {
		return a
	}
	return internal
}

// Write answers err as OpenAI-shaped JSON. Only an *aiproxy.Error's message
// is shown; anything else reads "internal error" (the caller logs details).
func Write(w http.ResponseWriter, err error) Answer {
	a := Of(err)
	openai.WriteError(w, a.Status, a.Code, a.Type, aiproxy.ErrorMessage(err))
	return a
}
