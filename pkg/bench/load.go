package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Path is the request path every load uses.
const Path = "/v1/chat/completions"

// ChatBody and StreamBody are the requests sent: a small chat completion,
// without and with "stream":true. A stream request does not ask for usage,
// so aiproxy injects stream_options.include_usage and strips what that adds
// (its usual path for a client such as a chat app).
var (
	ChatBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Say this is a test."}],"temperature":0.2}`)
	StreamBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Say this is a test."}],"temperature":0.2,"stream":true}`)
)

// Target is one server under measurement.
type Target struct {
	// Name labels the target in the report: direct, baseline, aiproxy, nginx.
	Name string
	// URL is its base URL, without a trailing slash.
	URL string
	// Keys are the bearer keys sent in turn; servers other than aiproxy get
	// them too and ignore them.
	Keys []string
	// PIDs returns the processes whose CPU and memory are the target's;
	// nil for none.
	PIDs func() []int
}

func (t Target) pids() []int {
	if t.PIDs == nil {
		return nil
	}
	return t.PIDs()
}

func (t Target) key(i uint64) string {
	if len(t.Keys) == 0 {
		return "sk-cfw000000000000000000000000000000000000000000000"
	}
	return t.Keys[i%uint64(len(t.Keys))]
}

// NewTransport returns the clients' transport: keep-alive, no compression,
// up to maxIdle idle connections per host, and new connections spread over
// the local addresses sources (127.0.0.x) so that many of them do not run out
// of loopback ports.
func NewTransport(sources []string, maxIdle int) *http.Transport {
	var ips []net.IP
	for _, s := range sources {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		}
	}
	var next atomic.Uint64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		if len(ips) > 0 {
			d.LocalAddr = &net.TCPAddr{IP: ips[next.Add(1)%uint64(len(ips))]}
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        2 * maxIdle,
		MaxIdleConnsPerHost: maxIdle,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// Errs counts errors by message, keeping at most 5 distinct messages.
type Errs map[string]int

func (e *Errs) add(msg string, n int) {
	if *e == nil {
		*e = Errs{}
	}
	if _, ok := (*e)[msg]; ok || len(*e) < 5 {
		(*e)[msg] += n
	}
}

// LoadSample is the outcome of one load run against one target.
type LoadSample struct {
	Requests  int
	Errors    int
	ErrorText Errs
	Latencies []time.Duration
	Elapsed   time.Duration
	// CPU is the CPU time the target's processes used during the run.
	CPU time.Duration
}

func (s *LoadSample) fail(msg string) {
	s.Errors++
	s.ErrorText.add(msg, 1)
}

func (s *LoadSample) merge(o LoadSample) {
	s.Requests += o.Requests
	s.Errors += o.Errors
	for k, v := range o.ErrorText {
		s.ErrorText.add(k, v)
	}
	s.Latencies = append(s.Latencies, o.Latencies...)
	s.Elapsed += o.Elapsed
	s.CPU += o.CPU
}

// OpenLoop sends non-stream chat completions to t at rate requests per
// second for d, whatever the answers' latency (vegeta's attacker), and
// checks each answer: status 200 and the mock's body, byte for byte.
func OpenLoop(ctx context.Context, t Target, rate int, d time.Duration, sources []string) LoadSample {
	var tgts []vegeta.Target
	n := max(1, len(t.Keys))
	for i := range n {
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("Authorization", "Bearer "+t.key(uint64(i)))
		tgts = append(tgts, vegeta.Target{Method: http.MethodPost, URL: t.URL + Path, Body: ChatBody, Header: h})
	}
	client := &http.Client{Transport: NewTransport(sources, 1000), Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	atk := vegeta.NewAttacker(vegeta.Client(client), vegeta.Workers(16), vegeta.MaxWorkers(2000))
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()

	s := LoadSample{Latencies: make([]time.Duration, 0, int(float64(rate)*d.Seconds())+16)}
	before := ReadProcs(t.pids())
	start := time.Now()
	for r := range atk.Attack(vegeta.NewStaticTargeter(tgts...), vegeta.Rate{Freq: rate, Per: time.Second}, d, t.Name) {
		s.Requests++
		switch {
		case r.Error != "":
			s.fail(r.Error)
		case r.Code != http.StatusOK:
			s.fail("status " + strconv.Itoa(int(r.Code)))
		case !bytes.Equal(r.Body, Completion):
			s.fail("body differs from the mock's")
		default:
			s.Latencies = append(s.Latencies, r.Latency)
		}
	}
	s.Elapsed = time.Since(start)
	s.CPU = ReadProcs(t.pids()).CPU - before.CPU
	return s
}

// ClosedLoop runs conc clients that each send the next non-stream request
// as soon as the last answer is read, for d.
func ClosedLoop(ctx context.Context, t Target, conc int, d time.Duration, sources []string) LoadSample {
	client := &http.Client{Transport: NewTransport(sources, conc), Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var total LoadSample
	var seq atomic.Uint64
	var wg sync.WaitGroup
	before := ReadProcs(t.pids())
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s LoadSample
			buf := make([]byte, 0, 1024)
			for ctx.Err() == nil {
				t0 := time.Now()
				var err error
				buf, err = post(ctx, client, t, seq.Add(1), buf[:0])
				if ctx.Err() != nil {
					break // cut by the deadline: not counted
				}
				s.Requests++
				if err != nil {
					s.fail(err.Error())
					continue
				}
				s.Latencies = append(s.Latencies, time.Since(t0))
			}
			mu.Lock()
			total.merge(s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	total.CPU = ReadProcs(t.pids()).CPU - before.CPU
	return total
}

// post sends one non-stream request and checks its answer.
func post(ctx context.Context, client *http.Client, t Target, i uint64, buf []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+Path, bytes.NewReader(ChatBody))
	if err != nil {
		return buf, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+t.key(i))
	res, err := client.Do(req)
	if err != nil {
		return buf, err
	}
	defer res.Body.Close()
	buf, err = readAll(res.Body, buf)
	if err != nil {
		return buf, err
	}
	if res.StatusCode != http.StatusOK {
		return buf, fmt.Errorf("status %d", res.StatusCode)
	}
	if !bytes.Equal(buf, Completion) {
		return buf, errors.New("body differs from the mock's")
	}
	return buf, nil
}

// StreamSample is the outcome of stream probes against one target.
type StreamSample struct {
	Streams   int
	Errors    int
	ErrorText Errs
	// TTFE is each stream's time from sending the request to reading its
	// first event; Headers to reading its response headers.
	TTFE    []time.Duration
	Headers []time.Duration
	// Delays is each event's time from the mock's write to the client's read.
	Delays []time.Duration
	// HeldBack counts events that a proxy kept until a later one came: read
	// half a pace or more after the mock wrote them, in the same read as an
	// event written after them. (An event that is only late, because a
	// process was not scheduled, is in Delays but not here, unless the
	// stall outlasted half a pace and the next event too.)
	HeldBack int
	Events   int
	// CPU is the CPU time the target's processes used during the probe.
	CPU time.Duration
}

func (s *StreamSample) fail(msg string) {
	s.Errors++
	s.ErrorText.add(msg, 1)
}

// StreamProbe sends streams stream requests to t, each of events events
// pace apart, and times every event. The streams start at an even pace (open
// loop), one every events*pace/conc, so that about conc are open at a time
// but they do not start in step: a burst of simultaneous starts would
// measure how the machine queues the burst more than what the proxy adds.
func StreamProbe(ctx context.Context, t Target, streams, conc, events int, pace time.Duration, sources []string) StreamSample {
	client := &http.Client{Transport: NewTransport(sources, 2*conc)}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var total StreamSample
	var wg sync.WaitGroup
	gap := time.Duration(int64(max(events-1, 1))*int64(pace)) / time.Duration(max(conc, 1))
	if gap <= 0 {
		gap = time.Millisecond
	}
	before := ReadProcs(t.pids())
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for i := range streams {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := readStream(ctx, client, t, uint64(i), events, pace, nil)
			mu.Lock()
			defer mu.Unlock()
			total.Streams++
			if r.err != nil {
				total.fail(r.err.Error())
			} else {
				total.TTFE = append(total.TTFE, r.ttfe)
				total.Headers = append(total.Headers, r.headers)
			}
			total.Delays = append(total.Delays, r.delays...)
			total.Events += len(r.delays)
			total.HeldBack += r.heldBack
		}()
	}
	wg.Wait()
	total.CPU = ReadProcs(t.pids()).CPU - before.CPU
	return total
}

type streamResult struct {
	ttfe     time.Duration
	headers  time.Duration
	heldBack int
	delays   []time.Duration
	err      error
}

// readStream sends one stream request and reads it to its end (or, with
// first != nil, until ctx ends, calling first once the first event is in).
// An event's time is when the read that completed it returned.
func readStream(ctx context.Context, client *http.Client, t Target, i uint64, events int, pace time.Duration, first func()) streamResult {
	var r streamResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+Path, bytes.NewReader(StreamBody))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+t.key(i))
	req.Header.Set(HeaderEvents, strconv.Itoa(events))
	req.Header.Set(HeaderPace, pace.String())
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	r.headers = time.Since(start)
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		r.err = fmt.Errorf("status %d", res.StatusCode)
		return r
	}
	buf := make([]byte, 4<<10)
	var pending []byte
	content, sawDone := 0, false
	for {
		n, err := res.Body.Read(buf)
		now := time.Now()
		if n > 0 {
			pending = append(pending, buf[:n]...)
			late := 0 // late events of this read so far, none followed yet
			for {
				j := bytes.Index(pending, []byte("\n\n"))
				if j < 0 {
					break
				}
				r.heldBack += late // a later event came in the same read
				late = 0
				ev := pending[:j]
				switch {
				case bytes.HasPrefix(ev, []byte("data: [DONE]")):
					sawDone = true
				case bytes.Contains(ev, []byte(`"choices":[]`)):
					r.err = errors.New("usage chunk reached a client that did not ask for it")
				default:
					if content == 0 {
						r.ttfe = now.Sub(start)
						if first != nil {
							first()
						}
					}
					content++
					if k := bytes.Index(ev, []byte(sentField[1:])); k >= 0 {
						if ns, ok := parseDigits(ev[k+len(sentField)-1:]); ok {
							d := now.Sub(time.Unix(0, ns))
							r.delays = append(r.delays, d)
							if pace > 0 && d >= pace/2 {
								late = 1
							}
						}
					}
				}
				pending = pending[j+2:]
			}
			if len(pending) == 0 {
				pending = pending[:0:0]
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if first != nil && ctx.Err() != nil {
				return r // closed by the caller, as planned
			}
			r.err = fmt.Errorf("stream cut after %d events: %v", content, err)
			return r
		}
	}
	switch {
	case r.err != nil:
	case first != nil:
		r.err = fmt.Errorf("stream ended after %d events, before the client closed it", content)
	case content != events || !sawDone:
		r.err = fmt.Errorf("stream incomplete: %d of %d events, [DONE] %v", content, events, sawDone)
	}
	return r
}

func parseDigits(b []byte) (int64, bool) {
	var n int64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	return n, i > 0
}

// MassSample is the outcome of holding many streams open at once.
type MassSample struct {
	Streams int
	// Opened is how many streams had their first event before the hold.
	Opened    int
	Errors    int
	ErrorText Errs
	Idle      ProcStat // the target before the streams
	Open      ProcStat // with every stream open
	// FDsAfter is the target's fd count once the streams were closed and
	// it settled (up to 10 s).
	FDsAfter int
	// Extra is a small open-loop run of non-stream requests made while the
	// streams are open.
	Extra LoadSample
}

// MassStreams opens n streams to t at once, each an event every pace for
// longer than the test, waits until each has its first event, reads the
// target's memory and file descriptors, sends extraRate non-stream
// requests/s for extraDur alongside, then closes every stream. A stream that
// fails or ends before it is closed is an error.
func MassStreams(ctx context.Context, t Target, n int, pace, settle time.Duration, extraRate int, extraDur time.Duration, sources []string) MassSample {
	s := MassSample{Streams: n}
	s.Idle = ReadProcs(t.pids())
	tr := NewTransport(sources, 0)
	tr.MaxIdleConnsPerHost = -1 // each stream has its own connection; none is kept
	client := &http.Client{Transport: tr}
	defer client.CloseIdleConnections()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var opened sync.WaitGroup
	opened.Add(n)
	var openedN atomic.Int64
	results := make(chan streamResult, n)
	for i := range n {
		go func() {
			var once sync.Once
			mark := func() { once.Do(func() { openedN.Add(1); opened.Done() }) }
			r := readStream(sctx, client, t, uint64(i), 1<<30, pace, mark)
			mark() // a failed stream counts as settled
			results <- r
		}()
	}
	waited := make(chan struct{})
	go func() { opened.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	sleep(ctx, settle)
	s.Opened = int(openedN.Load())
	s.Open = medianProc(ctx, t.pids(), 3, min(300*time.Millisecond, max(settle/2, 10*time.Millisecond)))
	if extraRate > 0 && extraDur > 0 {
		s.Extra = OpenLoop(ctx, t, extraRate, extraDur, sources)
	}
	// Streams still open now are fine; what failed before is an error.
	var early []streamResult
	for drained := false; !drained; {
		select {
		case r := <-results:
			early = append(early, r)
		default:
			drained = true
		}
	}
	cancel()
	for range n - len(early) {
		r := <-results
		if r.err != nil && r.ttfe == 0 {
			early = append(early, r) // never opened
		}
	}
	for _, r := range early {
		s.Errors++
		msg := "stream ended"
		if r.err != nil {
			msg = r.err.Error()
		}
		s.ErrorText.add(msg, 1)
	}
	client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.FDsAfter = ReadProcs(t.pids()).FDs
		if s.FDsAfter <= s.Idle.FDs+8 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return s
}

// medianProc reads pids k times, gap apart, and returns the sample with the
// median RSS.
func medianProc(ctx context.Context, pids []int, k int, gap time.Duration) ProcStat {
	var ss []ProcStat
	for i := range k {
		if i > 0 {
			sleep(ctx, gap)
		}
		ss = append(ss, ReadProcs(pids))
	}
	for i := range ss {
		for j := i + 1; j < len(ss); j++ {
			if ss[j].RSS < ss[i].RSS {
				ss[i], ss[j] = ss[j], ss[i]
			}
		}
	}
	return ss[len(ss)/2]
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
