//go:build unix

package e2e_test

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// created is one `user create` that ran to its end.
type created struct {
	name, key string
}

// creator runs `user create cN` in a loop, one at a time, and remembers
// every user whose command exited 0 (it printed a key).
type creator struct {
	e    *env
	mu   sync.Mutex
	ok   []created
	fail []cliResult
	durs []time.Duration
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func startCreator(e *env, prefix string, max int) *creator {
	c := &creator{e: e, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for i := 1; i <= max; i++ {
			select {
			case <-c.stop:
				return
			default:
			}
			name := fmt.Sprintf("%s%d", prefix, i)
			r := c.e.cli("user", "create", name)
			c.mu.Lock()
			if r.code == 0 {
				c.ok = append(c.ok, created{name, strings.TrimSpace(r.stdout)})
				c.durs = append(c.durs, r.dur)
			} else {
				c.fail = append(c.fail, r)
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// succeeded returns the users created so far.
func (c *creator) succeeded() []created {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]created(nil), c.ok...)
}

func (c *creator) end() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// checkDurable checks what DB-1 promises after a crash: the file passes
// integrity_check, every user in want exists with its full row, and no
// user row is half-written. It opens its own connection, as a restarted
// process would.
func checkDurable(t *testing.T, path string, want []created, when string) {
	t.Helper()
	if got := integrity(t, path); got != "ok" {
		t.Fatalf("%s: integrity_check = %q, want ok", when, got)
	}
	d, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n := queryInt(t, d, `SELECT COUNT(*) FROM users WHERE key_hash IS NULL OR length(key_hash) != 64
		OR key_hint IS NULL OR key_hint = '' OR created_at <= 0`); n != 0 {
		t.Errorf("%s: %d half-written user rows (no key hash, hint or time)", when, n)
	}
	if n := queryInt(t, d, "SELECT COUNT(*) FROM provider_keys"); n != 1 {
		t.Errorf("%s: %d provider keys, want the 1 added at the start", when, n)
	}
	have := map[string]bool{}
	rows, err := d.QueryContext(t.Context(), "SELECT name FROM users")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		have[n] = true
	}
	rows.Close()
	var lost []string
	for _, c := range want {
		if !have[c.name] {
			lost = append(lost, c.name)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%s: users whose `user create` exited 0 are gone: %v", when, lost)
	}
}

// checkKeys sends one proxied request with each key; each must answer 200.
func checkKeys(t *testing.T, addr string, users []created, when string) {
	t.Helper()
	for _, u := range users {
		r, err := proxied(t.Context(), addr, u.key, "ok")
		if err != nil || r.status != 200 {
			t.Errorf("%s: key of %s (created, exit 0) → %d %q, %v; want 200", when, u.name, r.status, r.body, err)
		}
	}
}

// TestDB1_CrashLoop: serve under load writes usage records while a loop
// creates users through the CLI. serve is killed with SIGKILL at random
// moments, and so are CLI writers mid-command. After each kill the file
// passes integrity_check, every user whose `user create` exited 0 exists
// with a key that works through the restarted proxy, and no row is half
// written (RELIABILITY.md DB-1).
func TestDB1_CrashLoop(t *testing.T) {
	e := newEnv(t)
	rng := testRand(t)
	loadKey := e.createUser("load")
	srv := e.serve()
	load := startLoad(srv.addr, loadKey, 4, 0)
	t.Cleanup(func() { load.stop() })
	creat := startCreator(e, "c", scale.db1MaxUsers)
	t.Cleanup(creat.end)

	checked := 0 // users[:checked] already had their key tried
	for i := 1; i <= scale.db1ServerKills; i++ {
		// A random moment, 50–400 ms into this server's life, under load.
		time.Sleep(time.Duration(50+rng.IntN(350)) * time.Millisecond)
		before := creat.succeeded()
		srv.kill9()
		when := fmt.Sprintf("after server kill %d", i)
		checkDurable(t, e.db, before, when)
		srv = e.serve()
		load.setAddr(srv.addr)
		// New users' keys, and a sample of older ones, through the
		// restarted proxy; every key is tried at the end.
		sample := before[checked:]
		for range min(10, checked) {
			sample = append(sample, before[rng.IntN(checked)])
		}
		checkKeys(t, srv.addr, sample, when)
		checked = len(before)
		if t.Failed() {
			t.FailNow()
		}
	}

	// Until scale.db1CLIKills writers were killed mid-command: a command
	// that beats its random kill moment counts as an attempt, not a kill.
	// Bounded: at most three attempts per kill wanted.
	cliKills, finishedFirst, committedUnseen := 0, 0, 0
	for j := 1; cliKills < scale.db1CLIKills && j <= 3*scale.db1CLIKills; j++ {
		name := fmt.Sprintf("k%d", j)
		r := killCLIMidway(t, e, rng, creat.medianDur(), "user", "create", name)
		when := fmt.Sprintf("after CLI kill %d", j)
		want := creat.succeeded()
		if r.code == 0 {
			finishedFirst++
			want = append(want, created{name, strings.TrimSpace(r.stdout)})
			checkKeys(t, srv.addr, want[len(want)-1:], when)
		} else {
			cliKills++
			if userExists(t, e.db, name) {
				committedUnseen++ // killed between its commit and printing the key
			}
		}
		checkDurable(t, e.db, want, when)
		mustProxy(t, srv.addr, loadKey)
		if t.Failed() {
			t.FailNow()
		}
	}

	creat.end()
	okReq, failedReq := load.stop()
	all := creat.succeeded()
	srv.kill9()
	checkDurable(t, e.db, all, "at the end")
	srv = e.serve()
	checkKeys(t, srv.addr, all, "at the end")
	if len(creat.fail) > 0 {
		t.Errorf("%d `user create` commands failed without being killed, first: %v", len(creat.fail), creat.fail[0])
	}
	d := openRaw(t, e.db)
	t.Logf("DB-1: %d server kills, %d CLI kills mid-command (%d of them after the commit; %d CLIs finished before their kill), "+
		"%d users created and kept, %d usage rows; load: %d requests ok, %d failed around the kills; median user create %v",
		scale.db1ServerKills, cliKills, committedUnseen, finishedFirst, len(all), queryInt(t, d, "SELECT COUNT(*) FROM usage"),
		okReq, failedReq, creat.medianDur())
	if okReq == 0 {
		t.Errorf("the load generator got no 200 at all: serve was not under load")
	}
	if cliKills < scale.db1CLIKills {
		t.Errorf("only %d of %d CLI writers were killed mid-command in %d attempts: the kill timing missed",
			cliKills, scale.db1CLIKills, cliKills+finishedFirst)
	}
}

// medianDur is the median run time of the successful commands so far.
func (c *creator) medianDur() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.durs) == 0 {
		return 50 * time.Millisecond
	}
	return percentile(c.durs, 0.5)
}

// killCLIMidway starts a CLI command and kills it with SIGKILL at a random
// moment between 20 % and 90 % of its typical run time, where it opens
// the database and writes. It returns the result;
// code is -1 when the kill landed before the command ended.
func killCLIMidway(t *testing.T, e *env, rng *rand.Rand, typical time.Duration, args ...string) cliResult {
	t.Helper()
	cmd := e.command(args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(typical/5 + time.Duration(rng.Int64N(int64(typical)*7/10))):
		cmd.Process.Kill()
		select {
		case err = <-done:
		case <-time.After(stopTimeout):
			t.Fatalf("aiproxy %v still running %v after SIGKILL", args, stopTimeout)
		}
	}
	return cliResult{args: args, stdout: out.String(), stderr: errb.String(), dur: time.Since(start), code: exitCodeOf(err)}
}

func exitCodeOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok && !ee.Exited() {
		return -1 // killed by a signal
	}
	return exitCode(err)
}

// userExists reports whether user name has a row.
func userExists(t *testing.T, path, name string) bool {
	t.Helper()
	d, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return queryInt(t, d, "SELECT COUNT(*) FROM users WHERE name = ?", name) == 1
}
