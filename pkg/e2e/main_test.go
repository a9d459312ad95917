//go:build unix

// Package e2e_test holds aiproxy's black-box reliability tests
// (RELIABILITY.md sections 7 and 8): they build the aiproxy binary once,
// run `aiproxy serve` and CLI commands as real processes on one SQLite file,
// crash them with kill -9, hold locks from other processes, fill disks, and
// check what survives. Everything runs on loopback; every loop is bounded in
// count and time, every wait has a deadline, and every process is killed in
// t.Cleanup.
//
// Scale: the default run is the bounded CI subset (about a minute on two
// cores). `-tags e2elong` runs the full figures of RELIABILITY.md (1 M users,
// minutes of load); `-tags load` adds LOAD-1 (thousands of open streams);
// `-short` skips the whole package.
//
// The tests that compare durations or time their kills (DB-1's crash loop,
// DB-3, DB-4, DB-6) run one at a time; the others call t.Parallel, so Go runs
// them after those, two at a time (-parallel defaults to GOMAXPROCS), where
// DB-8's reader holds and idle wait overlap the rest.
package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// helperEnv, when set, makes the test binary act as a helper process (see
// runHelper) instead of running tests.
const helperEnv = "AIPROXY_E2E_HELPER"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	code := pgtest.Main(m) // m.Run, then stop the PostgreSQL tests' cluster
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds aiproxy once per test run (with -race when the tests run
// with -race, so that the server's own data races fail the test) and
// returns its path. Under -short it skips the calling test.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped with -short (builds and runs the aiproxy binary)")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "aiproxy-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "aiproxy") // unix only: no .exe
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/aiproxy/aiproxy")
		cmd := exec.Command("go", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %v: %v\n%s", args, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build aiproxy: %v", buildErr)
	}
	return binPath
}
