package models

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// testFind knows api.groq.com (alias groq) and api.openai.com.
func testFind(_ context.Context, name string) (aiproxy.Provider, bool, error) {
	switch strings.ToLower(name) {
	case "groq", "api.groq.com":
		return aiproxy.Provider{Host: "api.groq.com", Alias: "groq"}, true, nil
	case "api.openai.com":
		return aiproxy.Provider{Host: "api.openai.com"}, true, nil
	case "broken":
		return aiproxy.Provider{}, false, errors.New("database is gone")
	}
	return aiproxy.Provider{}, false, nil
}

// TestResolveModel_PrefixNamesARegisteredProvider: ALIAS/MODEL and
// HOST/MODEL (any case) route to that provider with the bare model; any
// other name, native "/" included, is left for the default provider.
func TestResolveModel_PrefixNamesARegisteredProvider(t *testing.T) {
	t.Parallel()
	tests := []struct {
		model, host, bare string
		ok                bool
	}{
		{"groq/llama-3.3-70b-versatile", "api.groq.com", "llama-3.3-70b-versatile", true},
		{"GROQ/llama-3.3-70b-versatile", "api.groq.com", "llama-3.3-70b-versatile", true},
		{"api.groq.com/llama-3.3-70b-versatile", "api.groq.com", "llama-3.3-70b-versatile", true},
		{"api.openai.com/gpt-4o", "api.openai.com", "gpt-4o", true},
		{"groq/models/with/slashes", "api.groq.com", "models/with/slashes", true},
		{"meta-llama/Llama-3.3-70B-Instruct", "", "", false},
		{"gpt-4o", "", "", false},
		{"groq/", "", "", false},
		{"/gpt-4o", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range tests {
		p, bare, ok, err := ResolveModel(t.Context(), tc.model, testFind)
		if err != nil || ok != tc.ok || p.Host != tc.host || bare != tc.bare {
			t.Errorf("ResolveModel(%q) = %q, %q, %v, %v; want %q, %q, %v", tc.model, p.Host, bare, ok, err, tc.host, tc.bare, tc.ok)
		}
	}
	if _, _, ok, err := ResolveModel(t.Context(), "broken/x", testFind); ok || err == nil {
		t.Errorf("ResolveModel(broken/x) = %v, %v; want the lookup's error", ok, err)
	}
}

// TestResolveModel_NoAllocation: routing a model allocates nothing,
// whether the prefix names a provider or not.
func TestResolveModel_NoAllocation(t *testing.T) {
	ctx := context.Background()
	for _, model := range []string{"groq/llama-3.3-70b-versatile", "meta-llama/Llama-3.3-70B", "gpt-4o"} {
		if n := testing.AllocsPerRun(100, func() { ResolveModel(ctx, model, testFind) }); n != 0 {
			t.Errorf("ResolveModel(%q) allocates %v times, want 0", model, n)
		}
	}
}
