package server_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/proxy"
	"github.com/aiproxy/aiproxy/pkg/server"
)

// relZeros is an endless reader of a repeated byte.
type relZeros byte

func (z relZeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(z)
	}
	return len(p), nil
}

// TestLIM1_OversizedInputsRejectedCheaply: a 2 MB header gets 431; a
// declared 40 MiB body gets 413 before the upstream is dialled; a chunked
// 40 MiB body gets 413, and the upstream never sees it whole.
func TestLIM1_OversizedInputsRejectedCheaply(t *testing.T) {
	t.Parallel()
	// The default limit (32 MiB) against 40 MiB bodies; under -short or the
	// race detector the same code paths run with 4 MiB against 5 MiB.
	var maxBody, size int64 = 0, 40 << 20
	if testing.Short() || relRace {
		maxBody, size = 4<<20, 5<<20
	}
	h := newHarness(t, harnessOpts{proxy: proxy.Config{MaxBody: maxBody}})

	t.Run("2 MB header", func(t *testing.T) {
		before := h.fake.Count()
		c, err := net.Dial("tcp", relAddr(h))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+h.key+"\r\nX-Big: ")
			io.Copy(c, io.LimitReader(relZeros('a'), 2<<20))
			io.WriteString(c, "\r\nContent-Length: 2\r\n\r\n{}")
		}()
		ans := relReadAnswers(c)
		if len(ans) == 0 || ans[0].status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("answers %+v, want 431", ans)
		}
		if h.fake.Count() != before {
			t.Errorf("the upstream was contacted")
		}
	})

	for _, ct := range []string{"application/json", "multipart/form-data; boundary=x", "application/octet-stream"} {
		t.Run("declared too large "+ct, func(t *testing.T) {
			before := h.fake.Count()
			start := time.Now()
			// Headers only: a proxy that waited for the body would hang.
			ans := relRaw(t, relAddr(h), fmt.Sprintf("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", h.key, ct, size), 10*time.Second)
			if len(ans) != 1 {
				t.Fatalf("%d answers, want 1 (after %v)", len(ans), time.Since(start))
			}
			relWantError(t, "declared too large", ans[0].status, ans[0].header, ans[0].body, 413, "request_too_large")
			if h.fake.Count() != before {
				t.Errorf("the upstream was contacted")
			}
		})
	}

	t.Run("declared too large without a key", func(t *testing.T) {
		ans := relRaw(t, relAddr(h), fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size), 10*time.Second)
		if len(ans) != 1 || (ans[0].status != 401 && ans[0].status != 413) {
			t.Errorf("answers %+v, want one 401 or 413 without reading the body", ans)
		}
	})

	for _, ct := range []string{"application/json", "multipart/form-data; boundary=x", "application/octet-stream"} {
		t.Run("chunked too large "+ct, func(t *testing.T) {
			before := h.fake.Count()
			body := io.MultiReader(strings.NewReader(`{"model":"m","x":"`), io.LimitReader(relZeros('a'), size), strings.NewReader(`"}`))
			req, _ := http.NewRequest("POST", h.proxy.URL+"/v1/audio/transcriptions", body)
			req.ContentLength = -1
			req.Header = relAuth(h.key, "Content-Type", ct, "X-Fake-Mode", "ok")
			client := relNoKeepAlive()
			res, err := client.Do(req)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 413 {
					t.Errorf("status %d %q, want 413", res.StatusCode, b)
				} else {
					relWantError(t, "chunked", res.StatusCode, res.Header, string(b), 413, "request_too_large")
				}
			} else {
				// The proxy answered and closed while the client was still
				// sending; acceptable, as long as the upstream saw no whole body.
				t.Logf("client: %v", err)
			}
			h.inflight.Wait() // the proxy has sent upstream all it ever will
			for _, r := range h.fake.Requests()[before:] {
				if r.BodyComplete {
					t.Errorf("the upstream received a complete %d-byte body", len(r.Body))
				}
			}
		})
	}
	relNoPanicLogged(t, h)
}

// TestLIM2_HostileBodiesPassVerbatim: malformed JSON, invalid UTF-8, deep
// nesting, a 5 MB string, repeated keys and odd stream values reach the
// upstream byte for byte on an unmetered path, are either refused (400) or
// forwarded byte for byte on a metered one, and nothing panics.
func TestLIM2_HostileBodiesPassVerbatim(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	big := 5 << 20 // 1 MiB under the race detector, which is slow per byte
	if relRace {
		big = 1 << 20
	}
	bodies := map[string]string{
		"open brace":              `{`,
		"empty array":             `[]`,
		"null":                    `null`,
		"empty object":            `{}`,
		"deep arrays":             strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		"deep arrays, unclosed":   strings.Repeat("[", 100000),
		"deep objects":            strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		"deep stream_options":     `{"model":"m","stream":true,"stream_options":` + strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000) + `}`,
		"invalid UTF-8":           "\xff\xfe",
		"invalid UTF-8 in object": "{\"model\":\"m\xff\",\"stream\":true}",
		"NUL":                     "{\"model\":\"m\x00\",\"stream\":true}",
		"5 MB string":             `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", big) + `"}]}`,
		"5 MB string, stream":     `{"model":"m","stream":false,"messages":[{"role":"user","content":"` + strings.Repeat("\\u00e9", big/6) + `"}]}`,
		"duplicate stream":        `{"model":"m","stream":true,"stream":false}`,
		"duplicate stream true":   `{"model":"m","stream":true,"stream":true}`,
		"stream yes":              `{"model":"m","stream":"yes"}`,
		"stream 1":                `{"model":1,"stream":1}`,
		"stream_options string":   `{"model":"m","stream":true,"stream_options":"x"}`,
		"duplicate options":       `{"model":"m","stream":true,"stream_options":{},"stream_options":{}}`,
		"trailing garbage":        `{"model":"m","stream":true} x`,
		"two objects":             `{"model":"m","stream":true}{"model":"n"}`,
		"BOM":                     "\xef\xbb\xbf{\"model\":\"m\",\"stream\":true}",
		"huge number":             `{"model":"m","n":1e999999,"stream":false}`,
		"long key":                `{"` + strings.Repeat("k", 1<<20) + `":1}`,
		"only whitespace":         " \r\n\t ",
		"html":                    "<html><script>alert(1)</script>",
	}
	// On an unmetered path every body goes through byte for byte. On a
	// metered one (chat completions), a body that aiproxy cannot read as
	// one unambiguous JSON object is refused with 400 before anything goes
	// upstream (usage could otherwise escape); any other goes through byte
	// for byte.
	sent := 0
	for name, body := range bodies {
		cts := []string{"application/json", "", "text/plain; charset=utf-8", "application/json; charset=\xff"}
		if len(body) > 64<<10 {
			cts = cts[:2] // the two that are parsed; big bodies are slow under -race
		}
		for _, ct := range cts {
			for _, path := range []string{"/v1/moderations", "/v1/chat/completions"} {
				t.Run(name+"/"+ct+path, func(t *testing.T) {
					// fakeai records the body it received in every mode; echo
					// also sends it back, which for megabytes is slow under -race.
					mode := "echo"
					if len(body) > 64<<10 {
						mode = "ok"
					}
					before := h.fake.Count()
					a := relSend(t, nil, "POST", h.proxy.URL+path, body, relAuth(h.key, "X-Fake-Mode", mode, "Content-Type", ct))
					if a.status == 400 && path == "/v1/chat/completions" {
						if h.fake.Count() != before {
							t.Errorf("a refused body went upstream")
						}
						return
					}
					if a.status != 200 {
						t.Fatalf("status %d %.200s", a.status, a.body)
					}
					sent++
					reqs := h.fake.Requests()
					got := reqs[len(reqs)-1].Body
					if relSHA(got) != relSHA([]byte(body)) {
						t.Errorf("the upstream got %d bytes %.80q, want the %d bytes sent", len(got), got, len(body))
					}
				})
			}
		}
	}
	relWaitUsage(t, h, int64(sent), 20*time.Second)
	relNoPanicLogged(t, h)
}

// relLIM3Requests are requests whose logged fields carry CR, LF and
// quotes; each must add at most one log line, and the lines stay well formed.
func relLIM3Requests(h *harness, token string) []string {
	auth := "Authorization: Bearer " + h.key
	forged := `%0d%0a{"time":"x","level":"INFO","msg":"proxy","user":"admin"}%0d%0a`
	return []string{
		relRequest("POST", "/v1/chat/completions"+forged, []string{auth}, chatBody),
		relRequest("POST", "/v1/chat%0acompletions%0d", []string{auth, "X-Fake-Mode: status:400"}, chatBody),
		relRequest("GET", "/x"+forged, nil, ""),
		relRequest("GET", "/me"+forged, []string{auth}, ""),
		relRequest("POST", "/"+token+"/register/a%0ab", nil, ""),
		relRequest("POST", "/"+token+"/register/"+forged, nil, ""),
		relRequest("POST", "/admin/register/a%0d%0ab", []string{"Authorization: Bearer " + token}, ""),
		relRequest("POST", "/wrong%0d%0a/register/a", nil, ""),
		relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: a%0d%0aX-Injected: 1"}, chatBody),
		relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: a.com\rX-Injected: 1"}, chatBody),
		relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: a.com\nX-Injected: 1"}, chatBody),
		relRequest("POST", "/v1/chat/completions", []string{auth, "X-Fake-Mode: echo"}, `{"model":"m\r\n{\"msg\":\"forged\"}\r\n","messages":[]}`),
	}
}

// TestLIM3_LogLinesCannotBeForged: CR, LF and JSON in paths, names, hosts
// and models never start a new log line, in the JSON and the text format.
func TestLIM3_LogLinesCannotBeForged(t *testing.T) {
	t.Parallel()
	const token = "Lim3-Admin-Token-0123456789abcdef"
	h := newHarness(t, harnessOpts{server: server.Config{AccessToken: token}})
	for i, raw := range relLIM3Requests(h, token) {
		before := len(relLogLines(t, h))
		relRaw(t, relAddr(h), raw, 10*time.Second)
		h.inflight.Wait() // the proxy logs after answering, before its handler returns
		after := relLogLines(t, h)
		if n := len(after) - before; n > 1 {
			t.Errorf("request %d added %d log lines, want at most 1: %q", i, n, raw[:min(len(raw), 120)])
		}
		for _, m := range after[before:] {
			if m["user"] == "admin" || m["X-Injected"] != nil || m["msg"] == "forged" {
				t.Errorf("request %d forged a log entry: %v", i, m)
			}
		}
	}

	// The same through a text-format logger, as `serve --log-format text`.
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	px := proxy.New(h.svc, nil, log, proxy.Config{})
	textSrv := server.New(h.svc, px, log, server.Config{AccessToken: token})
	var inflight sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Done()
		textSrv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for i, raw := range relLIM3Requests(h, token) {
		before := strings.Count(buf.String(), "\n")
		relRaw(t, srv.Listener.Addr().String(), raw, 10*time.Second)
		inflight.Wait() // the request's line is written before its handler returns
		s := buf.String()
		if n := strings.Count(s, "\n") - before; n > 1 {
			t.Errorf("text log: request %d added %d lines, want at most 1", i, n)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("text log line does not start a record: %q", line)
		}
	}
}
