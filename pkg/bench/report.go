package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Report is the run's figures, as written to results.json. Times are in
// microseconds unless the name says otherwise; "added" figures are the
// target's minus the direct run's (the mock without a proxy) of the same
// round. Latency, CPU and throughput figures are medians over the rounds
// of each round's value; counts are sums.
type Report struct {
	Time    string         `json:"time"`
	Host    map[string]any `json:"host"`
	Config  map[string]any `json:"config"`
	Targets []TargetReport `json:"targets"`
	Micro   []MicroResult  `json:"micro,omitempty"`
	Checks  []Check        `json:"checks"`
	Notes   []string       `json:"notes,omitempty"`
	Extra   map[string]any `json:"extra,omitempty"`
	byName  map[string]*TargetReport
	results *Results
}

// TargetReport is one target's figures.
type TargetReport struct {
	Name   string        `json:"name"`
	Rates  []RateReport  `json:"rates"`
	Closed *ClosedReport `json:"closed_loop,omitempty"`
	Stream *StreamReport `json:"streams,omitempty"`
	Mass   *MassReport   `json:"concurrent_streams,omitempty"`
	// Errors is the sum of every phase's errors.
	Errors int `json:"errors"`
}

// RateReport is an open-loop run at one rate.
type RateReport struct {
	Rate     int      `json:"rate"`
	Achieved float64  `json:"achieved_rate"`
	Requests int      `json:"requests"`
	Errors   int      `json:"errors"`
	ErrText  Errs     `json:"error_text,omitempty"`
	P50      float64  `json:"p50_us"`
	P90      float64  `json:"p90_us"`
	P99      float64  `json:"p99_us"`
	AddedP50 *float64 `json:"added_p50_us,omitempty"`
	AddedP90 *float64 `json:"added_p90_us,omitempty"`
	AddedP99 *float64 `json:"added_p99_us,omitempty"`
	// CPU is the target's CPU time per request (the mock's, for direct).
	CPU float64 `json:"cpu_us_per_request"`
}

// ClosedReport is the closed-loop run.
type ClosedReport struct {
	Clients    int      `json:"clients"`
	Requests   int      `json:"requests"`
	Errors     int      `json:"errors"`
	RPS        float64  `json:"requests_per_s"`
	P50        float64  `json:"p50_us"`
	P99        float64  `json:"p99_us"`
	CPU        float64  `json:"cpu_us_per_request"`
	VsBaseline *float64 `json:"ratio_to_baseline,omitempty"`
	VsDirect   float64  `json:"ratio_to_direct"`
}

// StreamReport is the stream probes.
type StreamReport struct {
	Streams       int      `json:"streams"`
	Errors        int      `json:"errors"`
	ErrText       Errs     `json:"error_text,omitempty"`
	Events        int      `json:"events"`
	HeldBack      int      `json:"held_back"`
	TTFEP50       float64  `json:"ttfe_p50_us"`
	TTFEP99       float64  `json:"ttfe_p99_us"`
	AddedTTFEP50  *float64 `json:"added_ttfe_p50_us,omitempty"`
	AddedTTFEP99  *float64 `json:"added_ttfe_p99_us,omitempty"`
	DelayP50      float64  `json:"event_delay_p50_us"`
	DelayP99      float64  `json:"event_delay_p99_us"`
	AddedDelayP50 *float64 `json:"added_event_delay_p50_us,omitempty"`
	AddedDelayP99 *float64 `json:"added_event_delay_p99_us,omitempty"`
	// CPU is the target's CPU time per stream.
	CPU float64 `json:"cpu_us_per_stream"`
}

// MassReport is the concurrent streams.
type MassReport struct {
	Streams      int     `json:"streams"`
	Opened       int     `json:"opened"`
	Errors       int     `json:"errors"`
	ErrText      Errs    `json:"error_text,omitempty"`
	RSSIdleKiB   int64   `json:"rss_idle_kib"`
	RSSOpenKiB   int64   `json:"rss_open_kib"`
	PerStreamKiB float64 `json:"rss_per_stream_kib"`
	FDsIdle      int     `json:"fds_idle"`
	FDsOpen      int     `json:"fds_open"`
	FDsAfter     int     `json:"fds_after_close"`
	ThreadsOpen  int     `json:"threads_open"`
	ExtraP99     float64 `json:"extra_request_p99_us"`
	ExtraErrors  int     `json:"extra_request_errors"`
}

// MicroResult is one Go benchmark's line.
type MicroResult struct {
	Name        string  `json:"name"`
	NsPerOp     float64 `json:"ns_per_op"`
	MBPerS      float64 `json:"mb_per_s,omitempty"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
}

// Check is one of the targets with its measured value.
type Check struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit string  `json:"limit"`
	Unit  string  `json:"unit"`
	Pass  bool    `json:"pass"`
	// Missing is set when the run could not measure it.
	Missing bool `json:"missing,omitempty"`
}

// median is the middle value (the mean of the two middle ones), or 0.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return math.Round((s[n/2-1]+s[n/2])/2*100) / 100
	}
	return s[len(s)/2]
}

func us(d time.Duration) float64 { return math.Round(float64(d.Nanoseconds())/10) / 100 }

func ptr(v float64) *float64 { v = math.Round(v*100) / 100; return &v }

// NewReport computes the figures of res. The first target is direct.
func NewReport(res *Results) *Report {
	r := &Report{
		Time:    time.Now().UTC().Format(time.RFC3339),
		byName:  map[string]*TargetReport{},
		results: res,
		Config: map[string]any{
			"rates": res.Config.Rates, "rate_duration": res.Config.RateDuration.String(), "rounds": res.Config.Rounds,
			"closed_clients": res.Config.ClosedConcurrency, "closed_duration": res.Config.ClosedDuration.String(),
			"probe_streams": res.Config.ProbeStreams, "probe_events": res.Config.ProbeEvents, "probe_pace": res.Config.ProbePace.String(),
			"concurrent_streams": res.Config.MassStreams,
		},
	}
	direct := res.Targets[0]
	for _, name := range res.Targets {
		tr := TargetReport{Name: name}
		for _, rate := range res.Config.Rates {
			rounds := res.Rates[name][rate]
			if len(rounds) == 0 {
				continue
			}
			rr := RateReport{Rate: rate}
			var elapsed time.Duration
			var p50, p90, p99, cpu, a50, a90, a99 []float64
			for i, s := range rounds {
				rr.Requests += s.Requests
				rr.Errors += s.Errors
				for k, v := range s.ErrorText {
					rr.ErrText.add(k, v)
				}
				elapsed += s.Elapsed
				l50, l90, l99 := us(Percentile(s.Latencies, 50)), us(Percentile(s.Latencies, 90)), us(Percentile(s.Latencies, 99))
				p50, p90, p99 = append(p50, l50), append(p90, l90), append(p99, l99)
				cpu = append(cpu, perRequest(s.CPU, s.Requests))
				if d := res.Rates[direct][rate]; name != direct && i < len(d) {
					a50 = append(a50, l50-us(Percentile(d[i].Latencies, 50)))
					a90 = append(a90, l90-us(Percentile(d[i].Latencies, 90)))
					a99 = append(a99, l99-us(Percentile(d[i].Latencies, 99)))
				}
			}
			rr.P50, rr.P90, rr.P99 = median(p50), median(p90), median(p99)
			rr.CPU = math.Round(median(cpu)*100) / 100
			if len(a50) > 0 {
				rr.AddedP50, rr.AddedP90, rr.AddedP99 = ptr(median(a50)), ptr(median(a90)), ptr(median(a99))
			}
			if elapsed > 0 {
				rr.Achieved = math.Round(float64(rr.Requests) / elapsed.Seconds())
			}
			tr.Rates = append(tr.Rates, rr)
			tr.Errors += rr.Errors
		}
		if rounds := res.Closed[name]; len(rounds) > 0 {
			c := &ClosedReport{Clients: res.Config.ClosedConcurrency}
			var rps, p50, p99, cpu []float64
			for _, s := range rounds {
				c.Requests += s.Requests
				c.Errors += s.Errors
				if s.Elapsed > 0 {
					rps = append(rps, float64(s.Requests)/s.Elapsed.Seconds())
				}
				p50 = append(p50, us(Percentile(s.Latencies, 50)))
				p99 = append(p99, us(Percentile(s.Latencies, 99)))
				cpu = append(cpu, perRequest(s.CPU, s.Requests))
			}
			c.RPS, c.P50, c.P99 = math.Round(median(rps)), median(p50), median(p99)
			c.CPU = math.Round(median(cpu)*100) / 100
			tr.Closed = c
			tr.Errors += c.Errors
		}
		if rounds := res.Streams[name]; len(rounds) > 0 {
			sr := &StreamReport{}
			var t50, t99, d50, d99, at50, at99, ad50, ad99, cpu []float64
			for i, s := range rounds {
				cpu = append(cpu, perRequest(s.CPU, s.Streams))
				sr.Streams += s.Streams
				sr.Errors += s.Errors
				for k, v := range s.ErrorText {
					sr.ErrText.add(k, v)
				}
				sr.Events += s.Events
				sr.HeldBack += s.HeldBack
				f50, f99 := us(Percentile(s.TTFE, 50)), us(Percentile(s.TTFE, 99))
				e50, e99 := us(Percentile(s.Delays, 50)), us(Percentile(s.Delays, 99))
				t50, t99, d50, d99 = append(t50, f50), append(t99, f99), append(d50, e50), append(d99, e99)
				if d := res.Streams[direct]; name != direct && i < len(d) {
					at50 = append(at50, f50-us(Percentile(d[i].TTFE, 50)))
					at99 = append(at99, f99-us(Percentile(d[i].TTFE, 99)))
					ad50 = append(ad50, e50-us(Percentile(d[i].Delays, 50)))
					ad99 = append(ad99, e99-us(Percentile(d[i].Delays, 99)))
				}
			}
			sr.TTFEP50, sr.TTFEP99, sr.DelayP50, sr.DelayP99 = median(t50), median(t99), median(d50), median(d99)
			sr.CPU = math.Round(median(cpu)*10) / 10
			if len(at50) > 0 {
				sr.AddedTTFEP50, sr.AddedTTFEP99 = ptr(median(at50)), ptr(median(at99))
				sr.AddedDelayP50, sr.AddedDelayP99 = ptr(median(ad50)), ptr(median(ad99))
			}
			tr.Stream = sr
			tr.Errors += sr.Errors
		}
		if m := res.Mass[name]; m != nil {
			mr := &MassReport{
				Streams: m.Streams, Opened: m.Opened, Errors: m.Errors, ErrText: m.ErrorText,
				RSSIdleKiB: m.Idle.RSS >> 10, RSSOpenKiB: m.Open.RSS >> 10,
				FDsIdle: m.Idle.FDs, FDsOpen: m.Open.FDs, FDsAfter: m.FDsAfter, ThreadsOpen: m.Open.Threads,
				ExtraP99: us(Percentile(m.Extra.Latencies, 99)), ExtraErrors: m.Extra.Errors,
			}
			if m.Streams > 0 {
				mr.PerStreamKiB = math.Round(float64(m.Open.RSS-m.Idle.RSS)/1024/float64(m.Streams)*10) / 10
			}
			tr.Mass = mr
			tr.Errors += m.Errors + m.Extra.Errors
		}
		r.Targets = append(r.Targets, tr)
	}
	for i := range r.Targets {
		r.byName[r.Targets[i].Name] = &r.Targets[i]
	}
	base, dir := r.byName["baseline"], r.byName[direct]
	for i := range r.Targets {
		c := r.Targets[i].Closed
		if c == nil {
			continue
		}
		if base != nil && base.Closed != nil && base.Closed.RPS > 0 {
			c.VsBaseline = ptr(c.RPS / base.Closed.RPS)
		}
		if dir.Closed != nil && dir.Closed.RPS > 0 {
			c.VsDirect = math.Round(c.RPS/dir.Closed.RPS*100) / 100
		}
	}
	r.checks()
	return r
}

// AddMicro adds Go benchmark results and their checks.
func (r *Report) AddMicro(m []MicroResult) {
	r.Micro = append(r.Micro, m...)
	r.checks()
}

// cpuPerRequest is the median CPU per request of target name over its
// open-loop runs; nil without any.
func (r *Report) cpuPerRequest(name string) *float64 {
	var cpu []float64
	for _, rate := range r.results.Config.Rates {
		for _, s := range r.results.Rates[name][rate] {
			cpu = append(cpu, perRequest(s.CPU, s.Requests))
		}
	}
	if len(cpu) == 0 {
		return nil
	}
	return ptr(median(cpu))
}

// ratioCheck is the check that av ÷ bv is at most lim.
func ratioCheck(name, limit string, lim float64, unit string, av, bv *float64) Check {
	c := Check{Name: name, Limit: limit, Unit: unit}
	if av == nil || bv == nil || *bv <= 0 {
		c.Missing = true
	} else {
		c.Value = math.Round(*av / *bv * 100) / 100
		c.Pass = c.Value <= lim
	}
	return c
}

// checks compares aiproxy with the baseline against issue 10's targets.
func (r *Report) checks() {
	r.Checks = nil
	a, b := r.byName["aiproxy"], r.byName["baseline"]
	ratio := func(name, limit string, lim float64, av, bv *float64) {
		r.Checks = append(r.Checks, ratioCheck(name, limit, lim, "× baseline", av, bv))
	}
	if a != nil && b != nil {
		for i, ar := range a.Rates {
			if i >= len(b.Rates) {
				break
			}
			br := b.Rates[i]
			ratio(fmt.Sprintf("added p50 latency at %d requests/s", ar.Rate), "≤ 1.15", 1.15, ar.AddedP50, br.AddedP50)
			ratio(fmt.Sprintf("added p99 latency at %d requests/s", ar.Rate), "≤ 1.25", 1.25, ar.AddedP99, br.AddedP99)
		}
		ratio("proxy CPU per request (open-loop runs)", "≤ 1.15", 1.15, r.cpuPerRequest("aiproxy"), r.cpuPerRequest("baseline"))
		if a.Stream != nil && b.Stream != nil {
			ratio("stream time to first event added, p50", "≤ 1.15", 1.15, a.Stream.AddedTTFEP50, b.Stream.AddedTTFEP50)
			r.Checks = append(r.Checks, Check{Name: "stream events held back", Value: float64(a.Stream.HeldBack),
				Limit: "0", Unit: "events", Pass: a.Stream.HeldBack == 0 && a.Stream.Errors == 0})
		}
	}
	// aiproxy on PostgreSQL (-postgres) against aiproxy on SQLite: issue
	// 16's target for users without limits.
	if pg := r.byName["aiproxy-postgres"]; pg != nil && a != nil {
		vsSQLite := func(name string, av, bv *float64) {
			r.Checks = append(r.Checks, ratioCheck(name, "≤ 1.1", 1.1, "× SQLite", av, bv))
		}
		for i, pr := range pg.Rates {
			if i < len(a.Rates) {
				vsSQLite(fmt.Sprintf("PostgreSQL: added p50 latency at %d requests/s", pr.Rate), pr.AddedP50, a.Rates[i].AddedP50)
			}
		}
		vsSQLite("PostgreSQL: proxy CPU per request (open-loop runs)", r.cpuPerRequest("aiproxy-postgres"), r.cpuPerRequest("aiproxy"))
	}
	if a != nil && a.Mass != nil {
		r.Checks = append(r.Checks,
			Check{Name: fmt.Sprintf("%d concurrent streams: errors", a.Mass.Streams), Value: float64(a.Mass.Errors + a.Mass.Streams - a.Mass.Opened),
				Limit: "0", Unit: "streams", Pass: a.Mass.Errors == 0 && a.Mass.Opened == a.Mass.Streams},
			Check{Name: fmt.Sprintf("%d concurrent streams: RSS per open stream", a.Mass.Streams), Value: a.Mass.PerStreamKiB,
				Limit: "≤ 64", Unit: "KiB", Pass: a.Mass.PerStreamKiB <= 64})
	}
	// Key lookup: its absolute time is no longer a target, only that it
	// stays flat (indexed) from 10 to 1,000,000 users.
	var auth []MicroResult
	for _, m := range r.Micro {
		if strings.HasPrefix(m.Name, "BenchmarkAuthenticate/") && strings.HasSuffix(m.Name, "/hot") {
			auth = append(auth, m) // the same hot keys at every table size
		}
	}
	if len(auth) >= 2 {
		lo, hi := auth[0].NsPerOp, auth[0].NsPerOp
		for _, m := range auth {
			lo, hi = min(lo, m.NsPerOp), max(hi, m.NsPerOp)
		}
		r.Checks = append(r.Checks, Check{Name: "key authentication flat from 10 to 1,000,000 users (slowest / fastest)",
			Value: math.Round(hi/lo*100) / 100, Limit: "≤ 1.5", Unit: "×", Pass: hi/lo <= 1.5})
	}
}

// Markdown renders the report as the README's Performance tables.
func (r *Report) Markdown() string {
	var b strings.Builder
	names := make([]string, len(r.Targets))
	for i, t := range r.Targets {
		names[i] = t.Name
	}
	b.WriteString("| | " + strings.Join(names, " | ") + " |\n|---|" + strings.Repeat("---:|", len(names)) + "\n")
	row := func(label string, cell func(t *TargetReport) string) {
		b.WriteString("| " + label)
		for i := range r.Targets {
			v := cell(&r.Targets[i])
			if v == "" {
				v = "—"
			}
			b.WriteString(" | " + v)
		}
		b.WriteString(" |\n")
	}
	rates := r.results.Config.Rates
	for _, rate := range rates {
		row(fmt.Sprintf("latency p50 / p90 / p99 at %d req/s (µs)", rate), func(t *TargetReport) string {
			if rr := t.rate(rate); rr != nil {
				return fmt.Sprintf("%.0f / %.0f / %.0f", rr.P50, rr.P90, rr.P99)
			}
			return ""
		})
		row(fmt.Sprintf("**added** p50 / p90 / p99 at %d req/s (µs)", rate), func(t *TargetReport) string {
			if rr := t.rate(rate); rr != nil && rr.AddedP50 != nil {
				return fmt.Sprintf("**%.0f / %.0f / %.0f**", *rr.AddedP50, *rr.AddedP90, *rr.AddedP99)
			}
			return ""
		})
	}
	row("proxy CPU per request (µs), "+joinRates(rates), func(t *TargetReport) string {
		if t.Name == r.Targets[0].Name {
			return ""
		}
		var parts []string
		for _, rate := range rates {
			if rr := t.rate(rate); rr != nil {
				parts = append(parts, fmt.Sprintf("%.1f", rr.CPU))
			}
		}
		return "**" + strings.Join(parts, " / ") + "**"
	})
	row(fmt.Sprintf("closed loop, %d clients (req/s, × baseline)", r.results.Config.ClosedConcurrency), func(t *TargetReport) string {
		if t.Closed == nil {
			return ""
		}
		if t.Closed.VsBaseline != nil {
			return fmt.Sprintf("%.0f (%.2f×)", t.Closed.RPS, *t.Closed.VsBaseline)
		}
		return fmt.Sprintf("%.0f", t.Closed.RPS)
	})
	row("stream: first event p50 / p99 (µs)", func(t *TargetReport) string {
		if t.Stream == nil {
			return ""
		}
		return fmt.Sprintf("%.0f / %.0f", t.Stream.TTFEP50, t.Stream.TTFEP99)
	})
	row("stream: first event **added** p50 / p99 (µs)", func(t *TargetReport) string {
		if t.Stream == nil || t.Stream.AddedTTFEP50 == nil {
			return ""
		}
		return fmt.Sprintf("**%.0f / %.0f**", *t.Stream.AddedTTFEP50, *t.Stream.AddedTTFEP99)
	})
	row("stream: event delay **added** p50 / p99 (µs)", func(t *TargetReport) string {
		if t.Stream == nil || t.Stream.AddedDelayP50 == nil {
			return ""
		}
		return fmt.Sprintf("**%.0f / %.0f**", *t.Stream.AddedDelayP50, *t.Stream.AddedDelayP99)
	})
	row(fmt.Sprintf("stream: CPU per stream of %d events (µs)", r.results.Config.ProbeEvents), func(t *TargetReport) string {
		if t.Stream == nil || t.Name == r.Targets[0].Name {
			return ""
		}
		return fmt.Sprintf("%.0f", t.Stream.CPU)
	})
	row("stream: events held back", func(t *TargetReport) string {
		if t.Stream == nil {
			return ""
		}
		return fmt.Sprintf("%d of %d", t.Stream.HeldBack, t.Stream.Events)
	})
	n := r.results.Config.MassStreams
	row(fmt.Sprintf("%s open streams: RSS per stream (KiB)", thousands(n)), func(t *TargetReport) string {
		if t.Mass == nil || t.Name == r.Targets[0].Name {
			return ""
		}
		return fmt.Sprintf("**%.1f**", t.Mass.PerStreamKiB)
	})
	row(fmt.Sprintf("%s open streams: errors; extra request p99 (ms)", thousands(n)), func(t *TargetReport) string {
		if t.Mass == nil {
			return ""
		}
		return fmt.Sprintf("%d; %.1f", t.Mass.Errors+t.Mass.Streams-t.Mass.Opened, t.Mass.ExtraP99/1000)
	})
	row("errors, all phases", func(t *TargetReport) string { return fmt.Sprint(t.Errors) })

	if len(r.Checks) > 0 {
		b.WriteString("\n| target (aiproxy against the baseline, same run) | measured | limit | met |\n|---|---:|---:|:---:|\n")
		for _, c := range r.Checks {
			v, met := fmt.Sprintf("%g %s", c.Value, c.Unit), "yes"
			if c.Missing {
				v, met = "not measured", "—"
			} else if !c.Pass {
				met = "**no**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Name, v, c.Limit, met)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

func (t *TargetReport) rate(rate int) *RateReport {
	for i := range t.Rates {
		if t.Rates[i].Rate == rate {
			return &t.Rates[i]
		}
	}
	return nil
}

func joinRates(rates []int) string {
	var s []string
	for _, r := range rates {
		s = append(s, fmt.Sprintf("%d", r))
	}
	return "at " + strings.Join(s, " / ") + " req/s"
}

func thousands(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%d,000", n/1000)
	}
	return fmt.Sprint(n)
}
