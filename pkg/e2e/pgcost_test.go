//go:build linux

package e2e_test

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aiproxy/aiproxy/pkg/bench"
	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// TestPostgres_RequestPathCostWithinSQLites measures issue 16's target: for
// a user without limits, serve on PostgreSQL costs per request no more than
// 1.1 times serve on SQLite, in CPU (serve's own, from schedstat) and in
// added p50 (the proxied request's p50 less the same request's straight to
// the upstream), in the same run: rounds of sequential requests through each,
// interleaved, so that the machine's load falls on both alike. A
// measurement, so it runs only with AIPROXY_MEASURE=1:
//
//	AIPROXY_MEASURE=1 go test -run TestPostgres_RequestPathCostWithinSQLites -v ./pkg/e2e
//
// Usage writes are in serve's CPU on SQLite (the file is in-process) and
// mostly in the server's on PostgreSQL; at this rate they are a small part.
func TestPostgres_RequestPathCostWithinSQLites(t *testing.T) {
	if os.Getenv("AIPROXY_MEASURE") == "" {
		t.Skip("a measurement: set AIPROXY_MEASURE=1")
	}
	lite := newEnvAt(t, filepath.Join(t.TempDir(), "aiproxy.db"))
	pg := newPostgresEnv(t, pgtest.NewDatabase(t))
	type side struct {
		name string
		s    *serveProc
		key  string
		cpu  time.Duration
		n    int
		lat  []time.Duration
	}
	sides := []*side{{name: "sqlite"}, {name: "postgres"}}
	for i, e := range []*env{lite, pg} {
		sides[i].s = e.serve()
		sides[i].key = e.createUser("alice")
	}
	direct := func() time.Duration {
		r, err := send(t.Context(), "POST", pg.up.URL+"/v1/chat/completions",
			`{"model":"gpt-fake","messages":[{"role":"user","content":"hi"}]}`,
			map[string]string{"Authorization": "Bearer sk-upstream-secret", "X-Fake-Mode": "ok", "Content-Type": "application/json"})
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("direct request = %d, %v", r.status, err)
		}
		return r.dur
	}
	const rounds, per = 10, 500
	var directLat []time.Duration
	for round := -1; round < rounds; round++ { // round -1 warms up
		for _, sd := range sides {
			pid := sd.s.cmd.Process.Pid
			before := bench.ReadProcs([]int{pid}).CPU
			for range per {
				r, err := proxied(t.Context(), sd.s.addr, sd.key, "ok")
				if err != nil || r.status != http.StatusOK {
					t.Fatalf("%s: proxied = %d %q, %v", sd.name, r.status, r.body, err)
				}
				if round >= 0 {
					sd.lat = append(sd.lat, r.dur)
				}
			}
			if round >= 0 {
				sd.cpu += bench.ReadProcs([]int{pid}).CPU - before
				sd.n += per
			}
		}
		for range per / 5 {
			if d := direct(); round >= 0 {
				directLat = append(directLat, d)
			}
		}
	}
	p50 := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	base := p50(directLat)
	cpu := map[string]float64{}
	added := map[string]float64{}
	for _, sd := range sides {
		cpu[sd.name] = float64(sd.cpu.Microseconds()) / float64(sd.n)
		added[sd.name] = float64((p50(sd.lat) - base).Microseconds())
		t.Logf("%-8s serve CPU %.1f µs/request, p50 %v, added p50 %.0f µs (direct p50 %v), %d requests",
			sd.name, cpu[sd.name], p50(sd.lat), added[sd.name], base, sd.n)
	}
	t.Logf("postgres/sqlite: CPU %.2f×, added p50 %.2f×", cpu["postgres"]/cpu["sqlite"], added["postgres"]/added["sqlite"])
	if r := cpu["postgres"] / cpu["sqlite"]; r > 1.1 {
		t.Errorf("serve CPU per request on PostgreSQL is %.2f× SQLite's, want ≤ 1.1×", r)
	}
	if r := added["postgres"] / added["sqlite"]; r > 1.1 {
		t.Errorf("added p50 on PostgreSQL is %.2f× SQLite's, want ≤ 1.1×", r)
	}
}
