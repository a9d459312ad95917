package cmd

import (
	"regexp"
	"runtime/debug"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	// Never touches the database: a --db that cannot be opened is no error.
	r := run(t, "", "--db", t.TempDir(), "version")
	if r.Code != 0 || r.Err != "" {
		t.Fatalf("version: exit %d, stderr %q", r.Code, r.Err)
	}
	if !regexp.MustCompile(`^aiproxy \S+ \(commit \S+, built \S+\)\n$`).MatchString(r.Out) {
		t.Errorf("version printed %q, want one line \"aiproxy VERSION (commit COMMIT, built DATE)\"", r.Out)
	}
}

// TestVersion_ldflags sets the variables as goreleaser's -X flags would. It
// changes package state, so it does not run in parallel.
func TestVersion_ldflags(t *testing.T) {
	saved := [3]string{version, commit, date}
	t.Cleanup(func() { version, commit, date = saved[0], saved[1], saved[2] })
	version, commit, date = "1.2.3", "0123abcd", "2025-01-02T03:04:05Z"

	if got, want := runOK(t, "version"), "aiproxy 1.2.3 (commit 0123abcd, built 2025-01-02T03:04:05Z)\n"; got != want {
		t.Errorf("version = %q, want %q", got, want)
	}
}

func TestVersionInfo_buildInfo(t *testing.T) {
	t.Parallel()
	if version != "" || commit != "" || date != "" {
		t.Skip("built with -X version flags")
	}
	info := func(bi *debug.BuildInfo) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) { return bi, bi != nil }
	}
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want [3]string
	}{
		{"no build info", nil, [3]string{"dev", "unknown", "unknown"}},
		{"go build in a checkout", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2025-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
		}}, [3]string{"dev", "abc123-dirty", "2025-01-02T03:04:05Z"}},
		{"go install module@version", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, [3]string{"v1.4.0", "unknown", "unknown"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, c, d := versionInfo(info(tc.bi))
			if diff := cmp.Diff(tc.want, [3]string{v, c, d}); diff != "" {
				t.Errorf("versionInfo (-want +got):\n%s", diff)
			}
		})
	}
}
