package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// adminLimit is the twin of `user limit NAME …` (NAME * for the defaults):
//
//	POST /{token}/limit/{name}   {"rpm":60,"spend":"5/month","models":"gpt-4o*"}
//	POST /admin/limit/{name}     the same, with the token as a bearer
//
// The body's keys are the flags' names; a value null or "none" removes that
// limit; models is a comma-separated string or an array; {"clear":true}
// removes the user's own limits first. The answer is the user's row, as in
// GET /{token}/users.
func (s *Server) adminLimit(w http.ResponseWriter, r *http.Request) error {
	up, err := limitsBody(w, r)
	if err != nil {
		return err
	}
	row, err := s.svc.SetLimits(r.Context(), r.PathValue("name"), up)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, row)
	return nil
}

// limitsWant lists what a limits body may hold, for error messages.
var limitsWant = "want an object of " + strings.Join(aiproxy.LimitFields, ", ") + ` or "clear"`

// limitsBody reads a limits body into the update the CLI flags would make.
// Errors are EINVALID and name the field; they never echo the body.
func limitsBody(w http.ResponseWriter, r *http.Request) (admin.LimitsUpdate, error) {
	var up admin.LimitsUpdate
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	err := dec.Decode(&raw)
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return up, aiproxy.Errorf(aiproxy.EINVALID, "missing request body: %s", limitsWant)
	case errors.As(err, &tooBig):
		return up, aiproxy.Errorf(aiproxy.EINVALID, "request body is larger than %d bytes", maxAdminBody)
	case err != nil || raw == nil:
		return up, aiproxy.Errorf(aiproxy.EINVALID, "request body is not a valid JSON object: %s", limitsWant)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return up, aiproxy.Errorf(aiproxy.EINVALID, "request body has data after the JSON object")
	}
	for k := range raw {
		if k != "clear" && !isLimitField(k) {
			return up, aiproxy.Errorf(aiproxy.EINVALID, "request body has an unknown field: %s", limitsWant)
		}
	}
	if v, ok := raw["clear"]; ok {
		if err := json.Unmarshal(v, &up.Clear); err != nil {
			return up, aiproxy.Errorf(aiproxy.EINVALID, `request body field "clear" must be true or false`)
		}
	}
	for _, field := range aiproxy.LimitFields {
		v, ok := raw[field]
		if !ok {
			continue
		}
		value, err := limitValue(field, v)
		if err != nil {
			return up, err
		}
		up.Changes = append(up.Changes, admin.LimitChange{Field: field, Value: value})
	}
	return up, nil
}

func isLimitField(k string) bool {
	for _, f := range aiproxy.LimitFields {
		if k == f {
			return true
		}
	}
	return false
}

// limitValue is one body value in its flag form: null → none, a string as
// is, a number as written, and for models an array of names.
func limitValue(field string, v json.RawMessage) (string, error) {
	t := strings.TrimSpace(string(v))
	switch {
	case t == "null":
		return "none", nil
	case strings.HasPrefix(t, `"`):
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			break
		}
		return s, nil
	case strings.HasPrefix(t, "[") && field == "models":
		var list []string
		if err := json.Unmarshal(v, &list); err != nil {
			break
		}
		for _, m := range list {
			if strings.Contains(m, ",") {
				return "", aiproxy.Errorf(aiproxy.EINVALID, "invalid models: a model name holds a comma")
			}
		}
		if len(list) == 0 {
			return "", aiproxy.Errorf(aiproxy.EINVALID, `invalid models: an empty list; want model names, or "none"`)
		}
		return strings.Join(list, ","), nil
	case t != "" && (t[0] == '-' || t[0] >= '0' && t[0] <= '9') && field != "models":
		return t, nil // a JSON number: Limits.Set says whether it fits
	}
	return "", aiproxy.Errorf(aiproxy.EINVALID, "request body field %q has the wrong type", field)
}
