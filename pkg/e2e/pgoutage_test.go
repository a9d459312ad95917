//go:build unix

package e2e_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/aiproxy/aiproxy/pkg/pgtest"
)

// TestPostgres_OutageKeepsProxyingCachedKeyAndUsageArrivesAfterRestart:
// PostgreSQL stopped as by a crash (pg_ctl stop -m immediate) and started
// again while serve proxies a steady load for a key it has cached: the key
// keeps being proxied while the database is down (README: cached keys are
// served for 60 s of an outage), and the usage of every request proxied,
// before, during and after the outage, reaches the database once it is
// back, none dropped.
func TestPostgres_OutageKeepsProxyingCachedKeyAndUsageArrivesAfterRestart(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	dsn := cluster.NewDatabase(t)
	e := newPostgresEnv(t, dsn)
	a := e.serve("--access-token", adminToken)
	key := e.createUser("alice")
	mustProxy(t, a.addr, key) // alice is cached from here on

	// The load stops between two requests, so that every request sent is
	// counted with its answer.
	var halt, outage atomic.Bool
	var proxiedOK, okDuringOutage atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !halt.Load() {
			r, err := proxied(t.Context(), a.addr, key, "ok")
			if err != nil || r.status != http.StatusOK {
				t.Errorf("proxied request with a cached key = %d %q, %v; want 200 throughout", r.status, r.body, err)
				continue
			}
			proxiedOK.Add(1)
			if outage.Load() {
				okDuringOutage.Add(1)
			}
		}
	}()
	defer func() {
		halt.Store(true)
		<-done
	}()

	if !poll(20*time.Second, func() bool { return proxiedOK.Load() >= 20 }) {
		t.Fatalf("before the outage: %d proxied; want the load running", proxiedOK.Load())
	}
	cluster.Stop(t, "immediate")
	outage.Store(true)
	if !poll(20*time.Second, func() bool { return okDuringOutage.Load() >= 50 }) {
		t.Fatalf("during the outage: %d requests proxied; want the cached key served", okDuringOutage.Load())
	}
	outage.Store(false)
	cluster.Start(t)
	after := proxiedOK.Load()
	if !poll(20*time.Second, func() bool { return proxiedOK.Load() >= after+20 }) {
		t.Fatalf("after the restart: %d more proxied; want the load going on", proxiedOK.Load()-after)
	}
	halt.Store(true)
	<-done
	during := okDuringOutage.Load()
	t.Logf("proxied %d, %d of them while the database was down", proxiedOK.Load(), during)

	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := 1 + proxiedOK.Load() // the first mustProxy, and the load's
	var got int64
	if !poll(30*time.Second, func() bool {
		return db.QueryRow("SELECT COUNT(*) FROM usage").Scan(&got) == nil && got == want
	}) {
		t.Errorf("usage rows after the restart = %d, want %d (every request proxied, %d of them during the outage)", got, want, during)
	}
	if lines := a.logged("usage records dropped", "usage records lost"); len(lines) > 0 {
		t.Errorf("serve dropped usage records: %s", strings.Join(lines, "\n"))
	}
	if lines := a.logged("database unreachable: serving cached keys"); len(lines) == 0 {
		t.Errorf("serve did not log that it served cached keys through the outage")
	}
}

// TestPostgres_RestartLosesNoAcknowledgedAdminWrite: an admin client keeps
// creating users over serve's HTTP admin while PostgreSQL is stopped as by
// a crash (pg_ctl stop -m immediate) and started again: writes fail while
// it is down, with 503, and every write that was acknowledged (200) is
// there after the restart.
func TestPostgres_RestartLosesNoAcknowledgedAdminWrite(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	dsn := cluster.NewDatabase(t)
	e := newPostgresEnv(t, dsn)
	a := e.serve("--access-token", adminToken)

	var halt atomic.Bool
	var mu sync.Mutex
	var acked []string
	var ok, refused atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !halt.Load(); i++ {
			name := fmt.Sprintf("u%05d", i)
			r, err := send(t.Context(), "POST", "http://"+a.addr+"/admin/register/"+name, "",
				map[string]string{"Authorization": "Bearer " + adminToken})
			switch {
			case err == nil && r.status == http.StatusOK:
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
				ok.Add(1)
			case err == nil && r.status == http.StatusServiceUnavailable:
				refused.Add(1)
			default:
				t.Errorf("register %s = %d %q, %v; want 200, or 503 while the database is down", name, r.status, r.body, err)
			}
		}
	}()
	defer func() {
		halt.Store(true)
		<-done
	}()

	if !poll(20*time.Second, func() bool { return ok.Load() >= 10 }) {
		t.Fatalf("before the outage: %d users created; want the writes going", ok.Load())
	}
	cluster.Stop(t, "immediate")
	if !poll(20*time.Second, func() bool { return refused.Load() >= 3 }) {
		t.Fatalf("during the outage: %d admin writes refused; want 503s", refused.Load())
	}
	cluster.Start(t)
	back := ok.Load()
	if !poll(30*time.Second, func() bool { return ok.Load() >= back+10 }) {
		t.Fatalf("after the restart: %d more users created; want the writes working again", ok.Load()-back)
	}
	halt.Store(true)
	<-done
	t.Logf("users acknowledged %d, admin writes refused %d", ok.Load(), refused.Load())

	var users []map[string]any
	if err := json.Unmarshal([]byte(e.mustCLI("user", "list", "--json")), &users); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, u := range users {
		if name, ok := u["name"].(string); ok {
			have[name] = true
		}
	}
	for _, name := range acked {
		if !have[name] {
			t.Errorf("user %s was acknowledged (200) but is missing after the restart", name)
		}
	}
}
