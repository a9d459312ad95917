package bench

import (
	"crypto/tls"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// NewBaseline returns the baseline the targets are measured against: a bare
// httputil.ReverseProxy to upstream, configured as its documentation shows,
// with only the two changes without which it fails this benchmark's load:
//
//   - the handler enables full duplex (golang/go#40747): without it, a
//     ReverseProxy over HTTP/1 cut 1–4 of every 1,000 concurrent streams on
//     this machine;
//   - the transport keeps up to 100 idle connections per host instead of 2,
//     so that it does not open a new upstream connection for most requests
//     at 1,000 requests/s (and run out of loopback ports).
//
// It speaks HTTP/1.1 to the upstream, over TLS too (an https upstream that
// offers HTTP/2 still gets HTTP/1.1 and the same idle pool), and trusts the
// system roots: an https mock is trusted through SSL_CERT_FILE.
//
// It has no BufferPool: each response is copied through a fresh 32 KiB
// buffer, as in a stock ReverseProxy. It logs its errors to errLog.
func NewBaseline(upstream *url.URL, errLog *log.Logger) http.Handler {
	return newBaseline(upstream, errLog, BaselineTransport())
}

// NewBaselineTransport is NewBaseline with another transport
// (BaselineTransportH2).
func NewBaselineTransport(upstream *url.URL, errLog *log.Logger, tr http.RoundTripper) http.Handler {
	return newBaseline(upstream, errLog, tr)
}

// BaselineTransport is the baseline's upstream transport:
// http.DefaultTransport with 100 idle connections per host, HTTP/1.1 only.
func BaselineTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 100
	tr.MaxIdleConns = 1000
	// Clone has set DefaultTransport up for HTTP/2 and copied that (ALPN
	// h2 in TLSClientConfig, an "h2" TLSNextProto); undo it, or an h2
	// upstream would negotiate h2 on connections this transport reads as
	// HTTP/1.1.
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig = &tls.Config{}
	return tr
}

// BaselineTransportH2 is BaselineTransport that negotiates HTTP/2 with
// an HTTPS upstream that offers it (aiproxy-bench -baseline-h2), to compare
// with aiproxy's serve --upstream-http2 on the same protocol.
func BaselineTransportH2() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 100
	tr.MaxIdleConns = 1000
	return tr
}

func newBaseline(upstream *url.URL, errLog *log.Logger, tr http.RoundTripper) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(upstream) },
		Transport: tr,
		ErrorLog:  errLog,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
}

// NewServer returns the http.Server every Go process of the benchmark
// (mock, baseline) runs h with: the same settings as `aiproxy serve`.
func NewServer(h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          errLog,
	}
}
