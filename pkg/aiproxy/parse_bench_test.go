package aiproxy_test

import (
	"testing"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// BenchmarkNormalizeHost is the host check of every proxied request that
// names a provider. Allocation budget on the success path: 0 allocs/op
// for a host that is already canonical (the usual case: no port, lower
// case), at most 1 (the result) when it must be rewritten. Errors are
// built only for a host that is refused.
func BenchmarkNormalizeHost(b *testing.B) {
	for _, bc := range []struct{ name, host string }{
		{"canonical", "api.openai.com"},
		{"port", "api.openai.com:8443"},
		{"upper_case", "API.OpenAI.com"},
		{"ipv6_port", "[::1]:8080"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := aiproxy.NormalizeHost(bc.host); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestNormalizeHost_CanonicalAllocs: a host already in canonical form, as
// every proxied request names it, is returned as it is, without an
// allocation.
func TestNormalizeHost_CanonicalAllocs(t *testing.T) {
	for _, h := range []string{"api.openai.com", "localhost:8080", "127.0.0.1:11434", "[::1]", "[::1]:8080"} {
		var got string
		allocs := testing.AllocsPerRun(100, func() { got, _ = aiproxy.NormalizeHost(h) })
		if got != h {
			t.Errorf("NormalizeHost(%q) = %q, want it unchanged", h, got)
		}
		if allocs > 0 {
			t.Errorf("NormalizeHost(%q) made %v allocations, want 0", h, allocs)
		}
	}
}
