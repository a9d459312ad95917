package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ProcStat is what /proc says about a set of processes, summed.
type ProcStat struct {
	// CPU is the time their threads spent on a CPU, in nanoseconds from
	// /proc/PID/task/TID/schedstat (from utime+stime in /proc/PID/stat,
	// 10 ms ticks, where schedstat is missing).
	CPU time.Duration
	// RSS is VmRSS in bytes.
	RSS int64
	// FDs is the number of open file descriptors.
	FDs int
	// Threads is the number of threads.
	Threads int
}

// ReadProcs sums ProcStat over pids. A process that is gone is skipped.
func ReadProcs(pids []int) ProcStat {
	var s ProcStat
	for _, pid := range pids {
		s.add(readProc(pid))
	}
	return s
}

func (s *ProcStat) add(o ProcStat) {
	s.CPU += o.CPU
	s.RSS += o.RSS
	s.FDs += o.FDs
	s.Threads += o.Threads
}

func readProc(pid int) ProcStat {
	var s ProcStat
	dir := "/proc/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(dir + "/status"); err == nil {
		for _, line := range bytes.Split(b, []byte("\n")) {
			switch {
			case bytes.HasPrefix(line, []byte("VmRSS:")):
				s.RSS = statusKB(line) << 10
			case bytes.HasPrefix(line, []byte("Threads:")):
				s.Threads = int(statusKB(line))
			}
		}
	} else {
		return s
	}
	if fds, err := os.ReadDir(dir + "/fd"); err == nil {
		s.FDs = len(fds)
	}
	s.CPU = schedCPU(dir)
	if s.CPU < 0 {
		s.CPU = statCPU(dir)
	}
	return s
}

// statusKB parses "Name:   123 kB".
func statusKB(line []byte) int64 {
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n
}

// schedCPU sums the on-CPU nanoseconds of every thread of the process, or
// returns -1 if the kernel has no schedstat.
func schedCPU(dir string) time.Duration {
	tasks, err := filepath.Glob(dir + "/task/*/schedstat")
	if err != nil || len(tasks) == 0 {
		return -1
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return -1
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return -1
		}
		sum += time.Duration(n)
	}
	return sum
}

// statCPU is utime+stime of /proc/PID/stat, in 10 ms ticks.
func statCPU(dir string) time.Duration {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// Children returns the pids whose parent is pid (nginx's workers).
func Children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}
