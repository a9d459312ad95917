package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// Config sizes a benchmark run.
type Config struct {
	// Rates are the open-loop request rates, per second.
	Rates []int
	// RateDuration is one open-loop run of one target; each target gets
	// Rounds of them per rate, interleaved with the other targets'.
	RateDuration time.Duration
	Rounds       int
	// Warmup is an open-loop run at the highest rate before anything is
	// measured.
	Warmup time.Duration
	// ClosedConcurrency clients send requests back to back for
	// ClosedDuration.
	ClosedConcurrency int
	ClosedDuration    time.Duration
	// ProbeStreams streams of ProbeEvents events ProbePace apart, run
	// ProbeConcurrency at a time, time the events.
	ProbeStreams, ProbeConcurrency, ProbeEvents int
	ProbePace                                   time.Duration
	// MassStreams streams are held open at once (an event every MassPace),
	// MassSettle after the last one opened, while ExtraRate requests/s are
	// sent for ExtraDuration.
	MassStreams   int
	MassPace      time.Duration
	MassSettle    time.Duration
	ExtraRate     int
	ExtraDuration time.Duration
	// Sources are the local addresses clients connect from.
	Sources []string
	// Progress receives one line per step; nil for none.
	Progress io.Writer
}

// FullConfig is the default run: about 8 minutes with four targets.
func FullConfig() Config {
	return Config{
		Rates: []int{500, 1000}, RateDuration: 4 * time.Second, Rounds: 5, Warmup: 2 * time.Second,
		ClosedConcurrency: 64, ClosedDuration: 3 * time.Second,
		ProbeStreams: 200, ProbeConcurrency: 20, ProbeEvents: 20, ProbePace: 10 * time.Millisecond,
		MassStreams: 1000, MassPace: time.Second, MassSettle: 3 * time.Second,
		ExtraRate: 100, ExtraDuration: 3 * time.Second,
		Sources: Sources(),
	}
}

// QuickConfig is a run of about a minute, for a first look.
func QuickConfig() Config {
	c := FullConfig()
	c.RateDuration, c.Rounds, c.Warmup = 2*time.Second, 1, time.Second
	c.ClosedDuration = 2 * time.Second
	c.ProbeStreams = 60
	c.MassSettle, c.ExtraDuration = time.Second, time.Second
	return c
}

// Sources are 127.0.0.10–127.0.0.17: client connections spread over them
// so that thousands of them (and their TIME_WAITs) do not exhaust the
// loopback ports of one address.
func Sources() []string {
	var s []string
	for i := 10; i < 18; i++ {
		s = append(s, fmt.Sprintf("127.0.0.%d", i))
	}
	return s
}

func (c Config) logf(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}

// Results holds every raw sample of a run, by target name: one per round
// for the open-loop, closed-loop and stream phases.
type Results struct {
	Config  Config
	Targets []string
	Rates   map[string]map[int][]*LoadSample
	Closed  map[string][]*LoadSample
	Streams map[string][]*StreamSample
	Mass    map[string]*MassSample
}

// Run measures targets; targets[0] is the mock itself ("direct"), which the
// others' added latency is counted from. The open-loop, closed-loop and
// stream phases run in rounds, each round every target in turn (the order
// rotating), so that a disturbance of the machine hits one round of each
// rather than all of one target; the report pairs each target's round with
// the direct round next to it and takes the median over rounds. Run stops
// early only if ctx ends or a target fails its warm-up.
func Run(ctx context.Context, cfg Config, targets []Target) (*Results, error) {
	res := &Results{
		Config:  cfg,
		Rates:   map[string]map[int][]*LoadSample{},
		Closed:  map[string][]*LoadSample{},
		Streams: map[string][]*StreamSample{},
		Mass:    map[string]*MassSample{},
	}
	for _, t := range targets {
		res.Targets = append(res.Targets, t.Name)
		res.Rates[t.Name] = map[int][]*LoadSample{}
	}
	rounds := max(1, cfg.Rounds)
	top := slices.Max(cfg.Rates)

	// The streams first, on servers that have done nothing but a short
	// warm-up, so that the memory per stream is not hidden in memory freed
	// by earlier phases.
	for _, t := range targets {
		w := OpenLoop(ctx, t, 100, min(cfg.Warmup, 500*time.Millisecond), cfg.Sources)
		if w.Errors > 0 {
			return res, fmt.Errorf("%s fails its warm-up: %d of %d requests failed: %v", t.Name, w.Errors, w.Requests, w.ErrorText)
		}
		if cfg.MassStreams > 0 {
			cfg.logf("%s: %d concurrent streams", t.Name, cfg.MassStreams)
			m := MassStreams(ctx, t, cfg.MassStreams, cfg.MassPace, cfg.MassSettle, cfg.ExtraRate, cfg.ExtraDuration, cfg.Sources)
			res.Mass[t.Name] = &m
			cfg.logf("%s: %d/%d open, %d errors, RSS %d → %d KiB, fds %d → %d → %d",
				t.Name, m.Opened, m.Streams, m.Errors, m.Idle.RSS>>10, m.Open.RSS>>10, m.Idle.FDs, m.Open.FDs, m.FDsAfter)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
	}
	for _, t := range targets {
		cfg.logf("%s: warm-up, %d requests/s for %s", t.Name, top, cfg.Warmup)
		w := OpenLoop(ctx, t, top, cfg.Warmup, cfg.Sources)
		if w.Errors > w.Requests/100 {
			return res, fmt.Errorf("%s fails its warm-up: %d of %d requests failed: %v", t.Name, w.Errors, w.Requests, w.ErrorText)
		}
	}
	for _, rate := range cfg.Rates {
		for round := range rounds {
			for i := range targets {
				t := targets[(i+round)%len(targets)]
				s := OpenLoop(ctx, t, rate, cfg.RateDuration, cfg.Sources)
				cfg.logf("%s: %d requests/s, round %d: %d requests, %d errors, p50 %s p99 %s, CPU %.1f µs/request",
					t.Name, rate, round+1, s.Requests, s.Errors, Percentile(s.Latencies, 50), Percentile(s.Latencies, 99),
					perRequest(s.CPU, s.Requests))
				res.Rates[t.Name][rate] = append(res.Rates[t.Name][rate], &s)
				if err := ctx.Err(); err != nil {
					return res, err
				}
				sleep(ctx, 200*time.Millisecond)
			}
		}
	}
	for round := range rounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			s := ClosedLoop(ctx, t, cfg.ClosedConcurrency, cfg.ClosedDuration, cfg.Sources)
			res.Closed[t.Name] = append(res.Closed[t.Name], &s)
			cfg.logf("%s: closed loop, %d clients, round %d: %.0f requests/s, %d errors", t.Name, cfg.ClosedConcurrency,
				round+1, float64(s.Requests)/s.Elapsed.Seconds(), s.Errors)
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
	}
	per := max(1, cfg.ProbeStreams/rounds)
	for round := range rounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			s := StreamProbe(ctx, t, per, cfg.ProbeConcurrency, cfg.ProbeEvents, cfg.ProbePace, cfg.Sources)
			res.Streams[t.Name] = append(res.Streams[t.Name], &s)
			cfg.logf("%s: %d streams, round %d: %d errors, first event p50 %s, event delay p99 %s, %d held back",
				t.Name, s.Streams, round+1, s.Errors, Percentile(s.TTFE, 50), Percentile(s.Delays, 99), s.HeldBack)
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// Percentile returns the p-th percentile (nearest rank) of ds, or 0.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func perRequest(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Nanoseconds()) / 1e3 / float64(n)
}
