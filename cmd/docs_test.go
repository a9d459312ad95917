package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteDocs: the release's man pages and Markdown reference come from
// the command tree: one page per command, the audit and health commands
// included, each with its flags.
func TestWriteDocs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := WriteDocs(dir); err != nil {
		t.Fatalf("WriteDocs() error = %v", err)
	}
	for _, f := range []string{"man/aiproxy.1", "man/aiproxy-serve.1", "man/aiproxy-audit.1", "man/aiproxy-provider-test.1",
		"man/aiproxy-completion-bash.1", "md/aiproxy.md", "md/aiproxy_health.md", "md/aiproxy_user_create.md"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if f == "man/aiproxy-serve.1" && !strings.Contains(string(b), "usage-retention") {
			t.Errorf("%s does not document --usage-retention", f)
		}
	}
}
