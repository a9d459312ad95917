package bench

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
)

// TestTLSUpstream: the mock behind the self-signed certificate answers a
// client that trusts the certificate over HTTP/2 when it offers it, and the
// baseline's transport speaks HTTP/1.1 to it all the same.
func TestTLSUpstream(t *testing.T) {
	cert, key, err := WriteSelfSigned(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the certificate file holds no certificate")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lastProto atomic.Value
	proto := func() string { p, _ := lastProto.Load().(string); return p }
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastProto.Store(r.Proto)
		(&Mock{}).ServeHTTP(w, r)
	}), log.New(io.Discard, "", 0))
	go srv.ServeTLS(ln, cert, key)
	t.Cleanup(func() { srv.Close() })
	up := &url.URL{Scheme: "https", Host: ln.Addr().String()}

	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer h2.CloseIdleConnections()
	res, err := (&http.Client{Transport: h2}).Post(up.String()+Path, "application/json", bytes.NewReader(ChatBody))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Equal(body, Completion) || proto() != "HTTP/2.0" {
		t.Fatalf("direct over TLS: %s, %q", proto(), body)
	}

	tr := BaselineTransport()
	tr.TLSClientConfig.RootCAs = roots // the driver uses SSL_CERT_FILE
	defer tr.CloseIdleConnections()
	base := httptest.NewServer(newBaseline(up, log.New(io.Discard, "", 0), tr))
	defer base.Close()
	res, err = http.Post(base.URL+Path, "application/json", bytes.NewReader(ChatBody))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, Completion) {
		t.Fatalf("baseline: status %d, %q", res.StatusCode, body)
	}
	if proto() != "HTTP/1.1" {
		t.Fatalf("the baseline reached the upstream over %s, want HTTP/1.1", proto())
	}

	// Not trusted without the certificate.
	if _, err := (&http.Client{Transport: &http.Transport{}}).Get(up.String()); err == nil {
		t.Fatal("a client without the certificate connected")
	}
}
