package bench

import (
	"bufio"
	"strconv"
	"strings"
)

// ParseBenchOutput reads the result lines of `go test -bench -benchmem`
// output ("BenchmarkX/sub-2  N  123 ns/op  45.6 MB/s  0 B/op  0 allocs/op"),
// dropping the -GOMAXPROCS suffix from the names.
func ParseBenchOutput(out string) []MicroResult {
	var res []MicroResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		m := MicroResult{Name: f[0]}
		if i := strings.LastIndexByte(m.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(m.Name[i+1:]); err == nil {
				m.Name = m.Name[:i]
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				m.NsPerOp = v
			case "MB/s":
				m.MBPerS = v
			case "B/op":
				m.BytesPerOp = v
			case "allocs/op":
				m.AllocsPerOp = v
			}
		}
		res = append(res, m)
	}
	return res
}
