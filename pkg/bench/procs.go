package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a server process the driver started, in its own process group,
// with its stdout and stderr in a log file. It gets SIGKILL if the driver
// dies first.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
	stop sync.Once
}

// StartProc starts argv as name, logging to logPath.
func StartProc(name, logPath string, argv []string, env []string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, waits up to grace, then kills
// the group. It returns the process's exit error, if any besides the kill.
func (p *Proc) Stop(grace time.Duration) error {
	p.stop.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p.err
}

// WaitReady polls url (http://…) or, for a bare host:port, a TCP connect,
// until it answers, the process exits or timeout passes.
func WaitReady(ctx context.Context, p *Proc, target string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before it was ready (see its log): %v", p.Name, p.err)
		}
		var err error
		if strings.HasPrefix(target, "http://") {
			var res *http.Response
			if res, err = http.Get(target); err == nil {
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", res.StatusCode)
				}
			}
		} else {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", target, time.Second); err == nil {
				c.Close()
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			name := target
			if p != nil {
				name = p.Name
			}
			return fmt.Errorf("%s not ready after %s: %v", name, timeout, err)
		}
		sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// FreeAddr returns ip:port with a port that was free a moment ago.
func FreeAddr(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// RaiseFDLimit sets the soft open-file limit to the hard one and returns it;
// child processes inherit it.
func RaiseFDLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// Renice sets the scheduling priority of every thread of this process;
// threads and processes started later inherit it. (On Linux the priority
// is per thread.)
func Renice(prio int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, prio); err != nil {
			return err
		}
	}
	return nil
}

// NginxConfig returns an nginx.conf that proxies listen to upstream
// (host:port) the way a streaming API gateway is set up: no response or
// request buffering, HTTP/1.1 with a keep-alive upstream pool, no access log.
// Its pid file, error log and temp paths are under dir.
func NginxConfig(dir, listen, upstream string, workers int, asRoot bool) string {
	var b strings.Builder
	if asRoot {
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, `worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
worker_rlimit_nofile 16384;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream mock {
        server %[3]s;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen %[4]s;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }
    }
}
`, workers, dir, upstream, listen)
	return b.String()
}

// NginxPIDs returns nginx's master and its workers.
func NginxPIDs(master int) []int {
	return append([]int{master}, Children(master)...)
}
