package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/fakeai"
	"github.com/aiproxy/aiproxy/pkg/proxy"
)

// TestSSRF1_UnregisteredHostsNeverDialled: a valid key with X-Host-Final (or
// a host path segment) naming anything but a registered provider gets a 4xx
// OpenAI error, and nothing is dialled: neither the probe on 127.0.0.9 nor
// any address but the registered upstream's.
func TestSSRF1_UnregisteredHostsNeverDialled(t *testing.T) {
	t.Parallel()
	dials := &relDialRecorder{}
	h := newHarness(t, harnessOpts{proxy: proxy.Config{Transport: dials.transport()}})
	dials.allow(h.upstream.Listener.Addr().String())
	probe := newRelProbe(t, "127.0.0.9")
	_, port, _ := strings.Cut(probe.addr(), ":")

	hosts := []string{
		probe.addr(),
		"127.0.0.9",
		"169.254.169.254",
		"169.254.169.254:80",
		"metadata.google.internal",
		"localhost",
		"localhost:" + port,
		"[::1]",
		"[::1]:" + port,
		"[::ffff:127.0.0.9]:" + port,
		"0x7f000001",
		"2130706433",
		"127.1",
		"0177.0.0.1",
		"0",
		"0.0.0.0:" + port,
		"openai.com.127.0.0.9.nip.io",
		"api.openai.com.127.0.0.9.nip.io:" + port,
		"api.openai.co",   // one letter short of the registered host
		"api.openai.comm", // one letter more
		"api.openai.com:443",
		"api.openai.com:" + port,
		"xapi.openai.com",
		"api-openai.com",
		"api.openai.com..", // two trailing dots
		".api.openai.com",
	}
	for _, host := range hosts {
		t.Run("X-Host-Final "+host, func(t *testing.T) {
			before := h.fake.Count()
			a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", host))
			if a.status < 400 || a.status > 499 {
				t.Errorf("status %d, want 4xx; body %s", a.status, a.body)
			}
			relWantError(t, host, a.status, a.header, a.body, a.status, "")
			if h.fake.Count() != before {
				t.Errorf("the registered upstream was contacted for %q", host)
			}
		})
		t.Run("path /"+host, func(t *testing.T) {
			a := relSend(t, nil, "POST", h.proxy.URL+"/"+host+"/v1/chat/completions", chatBody, relAuth(h.key))
			if a.status < 400 || a.status > 499 {
				t.Errorf("status %d, want 4xx; body %s", a.status, a.body)
			}
			if _, ok := relOpenAIError(a.body); !ok {
				t.Errorf("body %q is not an OpenAI error", a.body)
			}
		})
	}
	// A registered host written in another case or with one trailing dot
	// normalises to the registered entry, and only to it.
	for _, host := range []string{"API.OPENAI.COM", "api.openai.com.", "Api.OpenAI.Com."} {
		a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", host))
		if a.status != 200 {
			t.Errorf("X-Host-Final %q: status %d, want 200 (the registered host); body %s", host, a.status, a.body)
		}
	}
	if n := probe.settled(t); n != 0 {
		t.Errorf("the probe on %s accepted %d connections, want 0", probe.addr(), n)
	}
	if bad := dials.forbidden(); len(bad) != 0 {
		t.Errorf("the proxy dialled unregistered addresses: %v", bad)
	}
}

// TestSSRF2_XHostFinalIsBareHost sends hostile X-Host-Final values on raw
// sockets (bytes a normal client refuses to send): each gets 400, nothing is
// dialled, and the log gains at most one well-formed line per request.
func TestSSRF2_XHostFinalIsBareHost(t *testing.T) {
	t.Parallel()
	dials := &relDialRecorder{}
	h := newHarness(t, harnessOpts{proxy: proxy.Config{Transport: dials.transport()}})
	dials.allow(h.upstream.Listener.Addr().String())
	probe := newRelProbe(t, "127.0.0.9")
	p := probe.addr()
	auth := "Authorization: Bearer " + h.key

	values := []string{
		"api.openai.com#@" + p,
		"api.openai.com#@127.0.0.9",
		"a.com/x",
		"api.openai.com/@" + p,
		"u:p@a.com",
		"api.openai.com@" + p,
		"api.openai.com:@" + p,
		"a.com?x",
		"api.openai.com?@" + p,
		"a.com%0d%0aX: y",
		"api.openai.com%0d%0aHost: " + p,
		"http://api.openai.com",
		"//" + p,
		"api.openai.com\\@" + p,
		"api.openai.com " + p,
		"api.openai.com\t" + p,
		"api.openai.com;" + p,
		"api.openai.com," + p,
		"api.openai.com\xff",
		"\xe2\x80\x8bapi.openai.com", // zero-width space
		"api.openai.com:0443",
		"api.openai.com:99999",
		"api.openai.com:-1",
		"[api.openai.com]",
		"",
	}
	type probeReq struct{ name, raw string }
	var reqs []probeReq
	for _, v := range values {
		reqs = append(reqs, probeReq{fmt.Sprintf("value %q", v),
			relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: " + v}, chatBody)})
	}
	// obs-fold continuation lines, which older servers join to the value.
	for _, fold := range []string{" " + p, "\t" + p, " @" + p} {
		reqs = append(reqs, probeReq{fmt.Sprintf("obs-fold %q", fold),
			relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: api.openai.com\r\n" + fold}, chatBody)})
	}
	// Two X-Host-Final headers: ambiguous, refused.
	reqs = append(reqs, probeReq{"two headers",
		relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: api.openai.com", "X-Host-Final: " + p}, chatBody)})
	// Control bytes in the value: Go's server refuses them before aiproxy
	// sees the request; that is fine as long as it is a 400.
	for _, c := range []string{"\x00", "\r", "\x7f", "\x0b"} {
		reqs = append(reqs, probeReq{fmt.Sprintf("control %q", c),
			relRequest("POST", "/v1/chat/completions", []string{auth, "X-Host-Final: api.openai.com" + c + p}, chatBody)})
	}

	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			before, logsBefore := h.fake.Count(), len(relLogLines(t, h))
			got := relRaw(t, relAddr(h), r.raw, 10*time.Second)
			if len(got) != 1 {
				t.Fatalf("got %d answers, want 1", len(got))
			}
			if got[0].status != 400 {
				t.Errorf("status %d, want 400; body %q", got[0].status, got[0].body)
			}
			if h.fake.Count() != before {
				t.Errorf("the upstream was contacted")
			}
			if n := len(relLogLines(t, h)) - logsBefore; n > 1 {
				t.Errorf("the request added %d log lines, want at most 1", n)
			}
		})
	}
	if n := probe.settled(t); n != 0 {
		t.Errorf("the probe accepted %d connections, want 0", n)
	}
	if bad := dials.forbidden(); len(bad) != 0 {
		t.Errorf("the proxy dialled unregistered addresses: %v", bad)
	}
}

// TestSSRF3_DenyPrivateUpstreams: with DenyPrivate (--deny-private-upstreams)
// a registered upstream on loopback is refused at dial time: 502, and its
// listener accepts no connection. Without it the same upstream answers.
func TestSSRF3_DenyPrivateUpstreams(t *testing.T) {
	t.Parallel()
	for _, deny := range []bool{true, false} {
		t.Run(fmt.Sprintf("deny=%v", deny), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{proxy: proxy.Config{DenyPrivate: deny}})
			probe := newRelProbe(t, "127.0.0.9")
			h.addProvider("local.test", "sk-local-secret", "http://"+probe.addr())
			_, port, _ := strings.Cut(h.upstream.Listener.Addr().String(), ":")
			// Registered by name: the check runs on the resolved address.
			h.addProvider("byname.test", "sk-byname-secret", "http://localhost:"+port)

			a := relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "local.test"))
			if deny {
				relWantError(t, "probe upstream", a.status, a.header, a.body, 502, "upstream_unreachable")
				if n := probe.settled(t); n != 0 {
					t.Errorf("the loopback upstream accepted %d connections, want 0", n)
				}
			} else if n := probe.accepted.Load(); n != 1 {
				t.Errorf("without the switch the loopback upstream accepted %d connections, want 1", n)
			}

			before := h.fake.Count()
			a = relSend(t, nil, "POST", h.proxy.URL+"/v1/chat/completions", chatBody, relAuth(h.key, "X-Host-Final", "byname.test"))
			if deny {
				relWantError(t, "localhost upstream", a.status, a.header, a.body, 502, "upstream_unreachable")
				if h.fake.Count() != before {
					t.Errorf("the localhost upstream was reached")
				}
			} else if a.status != 200 || h.fake.Count() != before+1 {
				t.Errorf("without the switch: status %d, upstream count +%d; want 200 and +1", a.status, h.fake.Count()-before)
			}
			for _, s := range []string{"sk-local-secret", "sk-byname-secret", h.key} {
				if strings.Contains(h.logs.String(), s) || strings.Contains(a.body, s) {
					t.Errorf("secret %q in the log or answer", s)
				}
			}
		})
	}
}

// TestSSRF4_RedirectsNeverFollowed: an upstream 3xx reaches the client as
// it is (or as a 502); the Location host never sees a connection, and so
// never the provider key.
func TestSSRF4_RedirectsNeverFollowed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	probe := newRelProbe(t, "127.0.0.9")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ name, body string }{
		{"non-stream", chatBody},
		{"stream", streamBody},
		{"no body", ""},
	} {
		for _, loc := range []string{"http://" + probe.addr() + "/steal", "//" + probe.addr() + "/steal", "http://169.254.169.254/latest/meta-data/"} {
			t.Run(tc.name+" "+loc, func(t *testing.T) {
				hdr := relAuth(h.key, "X-Fake-Mode", "redirect:"+loc)
				method := "POST"
				if tc.body == "" {
					method = "GET"
				}
				a := relSend(t, noFollow, method, h.proxy.URL+"/v1/chat/completions", tc.body, hdr)
				switch {
				case a.status == 502:
				case a.status >= 300 && a.status < 400:
					if a.header.Get("Location") != loc {
						t.Errorf("Location %q, want the upstream's %q", a.header.Get("Location"), loc)
					}
				default:
					t.Errorf("status %d, want 3xx or 502", a.status)
				}
				if strings.Contains(a.body, "sk-upstream-openai-1") {
					t.Errorf("the answer holds the provider key")
				}
			})
		}
	}
	if n := probe.settled(t); n != 0 {
		t.Errorf("the redirect target accepted %d connections, want 0", n)
	}
}

// TestSSRF5_BodyURLsNeverFetched: URLs inside a request body are bytes to
// forward: the probe they name sees nothing, and the upstream receives the
// body unchanged (SHA-256).
func TestSSRF5_BodyURLsNeverFetched(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	probe := newRelProbe(t, "127.0.0.9")
	u := "http://" + probe.addr() + "/x"
	bodies := map[string]string{
		"image_url": `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"` + u + `"}}]}]}`,
		"file url":  `{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"file","file":{"file_url":"` + u + `","file_id":"` + u + `"}}]}]}`,
		"audio url": `{"model":"gpt-4o","input_audio":{"url":"` + u + `"},"tools":[{"type":"web_search","url":"` + u + `"}],"messages":[]}`,
		"responses": `{"model":"gpt-4o","input":[{"role":"user","content":[{"type":"input_image","image_url":"` + u + `"}]}]}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/v1/chat/completions", "/v1/responses"} {
				a := relSend(t, nil, "POST", h.proxy.URL+path, body, relAuth(h.key, "X-Fake-Mode", "echo"))
				if a.status != 200 {
					t.Fatalf("%s: status %d %s", path, a.status, a.body)
				}
				reqs := h.fake.Requests()
				got := reqs[len(reqs)-1].Body
				if relSHA(got) != relSHA([]byte(body)) {
					t.Errorf("%s: the upstream got %q, want the body byte for byte", path, got)
				}
			}
		})
	}
	if n := probe.settled(t); n != 0 {
		t.Errorf("the URL in the body was fetched: the probe accepted %d connections", n)
	}
}

// TestSSRF6_ProviderKeyOnlyToItsHost: 200 concurrent, interleaved requests to
// two providers: each upstream sees only its own key, never the other's, and
// never a user key.
func TestSSRF6_ProviderKeyOnlyToItsHost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	fa, fb := fakeai.New(), fakeai.New()
	relUpstream(t, h, "a.test", "sk-KA-secret-key-a", fa)
	relUpstream(t, h, "b.test:8443", "sk-KB-secret-key-b", fb)
	bob := h.createUser("bob")

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan string, n)
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			key, host, path := h.key, "a.test", "/v1/chat/completions"
			if i%2 == 1 {
				key, host = bob, "B.TEST.:8443"
			}
			body, mode := chatBody, "echo"
			switch i % 4 {
			case 2, 3:
				body, mode = streamBody, "sse:2:0"
			}
			var url string
			hdr := http.Header{"Authorization": {"Bearer " + key}, "X-Fake-Mode": {mode}, "Content-Type": {"application/json"}}
			if i%8 < 4 {
				hdr.Set("X-Host-Final", host)
				url = h.proxy.URL + path
			} else {
				url = h.proxy.URL + "/" + strings.ToLower(strings.TrimSuffix(strings.Replace(host, ".:", ":", 1), ".")) + path
			}
			req, _ := http.NewRequestWithContext(context.Background(), "POST", url, strings.NewReader(body))
			req.Header = hdr
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			b := readAllErr(res)
			if res.StatusCode != 200 {
				errs <- fmt.Sprintf("request %d to %s: status %d %s", i, host, res.StatusCode, b)
				return
			}
			// What each upstream saw is checked below, on its side; the
			// echo of it reaches the client with the provider key masked.
			if strings.Contains(b, "secret-key") {
				errs <- fmt.Sprintf("request %d to %s: the answer holds a provider key", i, host)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	check := func(name string, f *fakeai.Server, own, other string) {
		reqs := f.Requests()
		if len(reqs) != n/2 {
			t.Errorf("%s saw %d requests, want %d", name, len(reqs), n/2)
		}
		for _, r := range reqs {
			if got := r.Header.Get("Authorization"); got != "Bearer "+own {
				t.Errorf("%s saw Authorization %q, want its own key", name, got)
			}
			all := fmt.Sprint(r.Header) + string(r.Body) + r.Path + r.Query
			for _, s := range []string{other, h.key, bob, "sk-cfw", "sk-upstream-openai-1"} {
				if strings.Contains(all, s) {
					t.Errorf("%s received %q", name, s)
				}
			}
		}
	}
	check("upstream A", fa, "sk-KA-secret-key-a", "sk-KB-secret-key-b")
	check("upstream B", fb, "sk-KB-secret-key-b", "sk-KA-secret-key-a")
	if h.fake.Count() != 0 {
		t.Errorf("the default upstream saw %d requests, want 0", h.fake.Count())
	}
}
