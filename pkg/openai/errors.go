package openai

import (
	"encoding/json"
	"net/http"
	"strconv"
)

type errorEnvelope struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

// ErrorBody returns the OpenAI-shaped error body
// {"error":{"message":…,"type":…,"code":…}}, all three strings, followed by a
// newline.
func ErrorBody(code, typ, message string) []byte {
	b, err := json.Marshal(errorEnvelope{errorObject{Message: message, Type: typ, Code: code}})
	if err != nil { // strings always marshal
		panic(err)
	}
	return append(b, '\n')
}

// WriteError writes status and ErrorBody(code, typ, message) to w as
// application/json. Headers set before the call (Allow, Retry-After) stay;
// Content-Length is set to the body's length. A write error is ignored: it
// means the client has gone.
func WriteError(w http.ResponseWriter, status int, code, typ, message string) {
	body := ErrorBody(code, typ, message)
	h := w.Header()
	h.Del("Content-Encoding")
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
