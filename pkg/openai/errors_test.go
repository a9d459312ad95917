package openai

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteError(t *testing.T) {
	tests := []struct {
		name               string
		status             int
		code, typ, message string
		want               string
	}{
		{"unauthorized", 401, "invalid_api_key", "authentication_error", "invalid key",
			`{"error":{"message":"invalid key","type":"authentication_error","code":"invalid_api_key"}}` + "\n"},
		{"escaping", 400, "invalid_request", "invalid_request_error", "bad \"X-Host-Final\"\r\n<é>\x00",
			`{"error":{"message":"bad \"X-Host-Final\"\r\n\u003cé\u003e\u0000","type":"invalid_request_error","code":"invalid_request"}}` + "\n"},
		{"empty strings", 500, "", "", "",
			`{"error":{"message":"","type":"","code":""}}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Allow", "GET")
			rec.Header().Set("Content-Encoding", "gzip")
			WriteError(rec, tc.status, tc.code, tc.typ, tc.message)
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			if got := rec.Body.String(); got != tc.want {
				t.Errorf("body = %s, want %s", got, tc.want)
			}
			wantH := http.Header{
				"Allow":                  {"GET"},
				"Content-Type":           {"application/json; charset=utf-8"},
				"X-Content-Type-Options": {"nosniff"},
				"Content-Length":         {strconv.Itoa(len(tc.want))},
			}
			if diff := cmp.Diff(wantH, rec.Header()); diff != "" {
				t.Errorf("headers differ (-want +got):\n%s", diff)
			}
			var e struct {
				Error map[string]any `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"message": tc.message, "type": tc.typ, "code": tc.code}
			if diff := cmp.Diff(want, e.Error); diff != "" {
				t.Errorf("decoded error differs (-want +got):\n%s", diff)
			}
			if got := string(ErrorBody(tc.code, tc.typ, tc.message)); got != tc.want {
				t.Errorf("ErrorBody = %s, want %s", got, tc.want)
			}
		})
	}
}
