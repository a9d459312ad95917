package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/sse/*.golden and *.usage.json from the scanner's output")

const sseDir = "../../testdata/sse"

type sseCase struct {
	name   string
	in     []byte
	golden []byte
	usage  usageJSON
}

func loadSSECases(t *testing.T) []sseCase {
	t.Helper()
	ins, err := filepath.Glob(filepath.Join(sseDir, "*.in"))
	if err != nil || len(ins) == 0 {
		t.Fatalf("no fixtures in %s: %v", sseDir, err)
	}
	var cases []sseCase
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in")
		c := sseCase{name: name}
		if c.in, err = os.ReadFile(in); err != nil {
			t.Fatal(err)
		}
		if *update {
			out, u, err := scan(readCloser{bytes.NewReader(c.in)}, true, 4096)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			uj, _ := json.MarshalIndent(toJSON(u), "", "  ")
			writeFile(t, filepath.Join(sseDir, name+".golden"), out)
			writeFile(t, filepath.Join(sseDir, name+".usage.json"), append(uj, '\n'))
		}
		if c.golden, err = os.ReadFile(filepath.Join(sseDir, name+".golden")); err != nil {
			t.Fatal(err)
		}
		uj, err := os.ReadFile(filepath.Join(sseDir, name+".usage.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(uj, &c.usage); err != nil {
			t.Fatalf("%s.usage.json: %v", name, err)
		}
		cases = append(cases, c)
	}
	return cases
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readers are the ways a test feeds an upstream body to the scanner, and
// reads the scanner, each with a name.
var readers = []struct {
	name string
	up   func([]byte) io.ReadCloser
	bufN int                       // the caller's read buffer
	wrap func(io.Reader) io.Reader // how the caller reads the scanner
}{
	{"whole", func(b []byte) io.ReadCloser { return readCloser{bytes.NewReader(b)} }, 32 << 10, nil},
	{"small caller buffer", func(b []byte) io.ReadCloser { return readCloser{bytes.NewReader(b)} }, 7, nil},
	{"upstream OneByteReader", func(b []byte) io.ReadCloser { return readCloser{iotest.OneByteReader(bytes.NewReader(b))} }, 4096, nil},
	{"upstream HalfReader", func(b []byte) io.ReadCloser { return readCloser{iotest.HalfReader(bytes.NewReader(b))} }, 4096, nil},
	{"upstream DataErrReader", func(b []byte) io.ReadCloser { return readCloser{iotest.DataErrReader(bytes.NewReader(b))} }, 4096, nil},
	{"caller OneByteReader", func(b []byte) io.ReadCloser { return readCloser{bytes.NewReader(b)} }, 4096, iotest.OneByteReader},
	{"caller HalfReader", func(b []byte) io.ReadCloser { return readCloser{iotest.HalfReader(bytes.NewReader(b))} }, 4096, iotest.HalfReader},
}

// TestStreamScannerGolden runs every testdata/sse fixture through the
// scanner in both modes and with many read patterns. With strip the output
// must equal <case>.golden (the stream the upstream sends when not asked for
// usage); without strip it must equal the input. The usage must equal
// <case>.usage.json either way.
func TestStreamScannerGolden(t *testing.T) {
	for _, c := range loadSSECases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, strip := range []bool{true, false} {
				want := c.in
				if strip {
					want = c.golden
				}
				for _, rd := range readers {
					s := NewStreamScanner(rd.up(c.in), strip)
					var r io.Reader = s
					if rd.wrap != nil {
						r = rd.wrap(s)
					}
					got, err := readAll(r, rd.bufN)
					if err != nil {
						t.Fatalf("strip=%v %s: read error %v", strip, rd.name, err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("strip=%v %s: output differs (-want +got):\n%s", strip, rd.name, cmp.Diff(string(want), string(got)))
					}
					if diff := cmp.Diff(c.usage, toJSON(s.Usage())); diff != "" {
						t.Errorf("strip=%v %s: Usage() differs (-want +got):\n%s", strip, rd.name, diff)
					}
					if !s.Done() {
						t.Errorf("strip=%v %s: Done() = false after io.EOF", strip, rd.name)
					}
				}
			}
		})
	}
}

// TestStreamScannerEverySplit feeds each fixture in two reads, split at every
// byte, and then in 1, 2 and 3 byte reads.
func TestStreamScannerEverySplit(t *testing.T) {
	for _, c := range loadSSECases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			check := func(how string, up func() io.ReadCloser) {
				t.Helper()
				for _, strip := range []bool{true, false} {
					want := c.in
					if strip {
						want = c.golden
					}
					got, u, err := scan(up(), strip, 1024)
					if err != nil {
						t.Fatalf("%s strip=%v: %v", how, strip, err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("%s strip=%v: output differs (-want +got):\n%s", how, strip, cmp.Diff(string(want), string(got)))
					}
					if diff := cmp.Diff(c.usage, toJSON(u)); diff != "" {
						t.Fatalf("%s strip=%v: Usage() differs (-want +got):\n%s", how, strip, diff)
					}
				}
			}
			for k := 0; k <= len(c.in); k = nextSplit(k, len(c.in)) {
				check("split at "+strconv.Itoa(k), func() io.ReadCloser {
					return newChunkReader(nil, bytes.Clone(c.in[:k]), bytes.Clone(c.in[k:]))
				})
			}
			for size := 1; size <= 3; size++ {
				check("reads of "+strconv.Itoa(size), func() io.ReadCloser {
					var chunks [][]byte
					for b := c.in; len(b) > 0; {
						n := min(size, len(b))
						chunks = append(chunks, bytes.Clone(b[:n]))
						b = b[n:]
					}
					return newChunkReader(nil, chunks...)
				})
			}
		})
	}
}

const (
	oaNull  = `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}` + "\n\n"
	oaPlain = `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n"
	oaUsage = `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n"
	done    = "data: [DONE]\n\n"
)

// TestStreamScannerStrip covers the strip rules case by case.
func TestStreamScannerStrip(t *testing.T) {
	u341 := usageJSON{PromptTokens: ptr(3), CompletionTokens: ptr(1), TotalTokens: ptr(4)}
	tests := []struct {
		name  string
		in    string
		want  string
		usage usageJSON // Model is ignored
	}{
		{"openai", oaNull + oaUsage + done, oaPlain + done, u341},
		{"usage chunk is the last event", oaNull + oaUsage, oaPlain, u341},
		{"usage chunk without blank line at EOF", oaNull + strings.TrimSuffix(oaUsage, "\n"), oaPlain, u341},
		{"null member only", "data: {\"usage\":null}\n\n", "data: {}\n\n", usageJSON{}},
		{"null member with spaces", "data: { \"a\" : 1 , \"usage\" : null }\n\n", "data: { \"a\" : 1 }\n\n", usageJSON{}},
		{"null member first with spaces", "data: { \"usage\" : null , \"a\" : 1 }\n\n", "data: { \"a\" : 1 }\n\n", usageJSON{}},
		{"null member in the middle", `data: {"a":1,"usage":null,"b":2}` + "\n\n", `data: {"a":1,"b":2}` + "\n\n", usageJSON{}},
		{"nested null usage stays", `data: {"choices":[{"usage":null}],"x":{"usage":null}}` + "\n\n", `data: {"choices":[{"usage":null}],"x":{"usage":null}}` + "\n\n", usageJSON{}},
		{"duplicate usage keys stay", `data: {"usage":null,"usage":null}` + "\n\n", `data: {"usage":null,"usage":null}` + "\n\n", usageJSON{}},
		{"choices not empty keeps usage", `data: {"choices":[{}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n", `data: {"choices":[{}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n", u341},
		{"no choices key keeps usage", `data: {"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n", `data: {"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n", u341},
		{"choices with white space is empty", `data: {"choices":[ ],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n" + done, done, u341},
		{"usage string is not an object", `data: {"choices":[],"usage":"x"}` + "\n\n", `data: {"choices":[],"usage":"x"}` + "\n\n", usageJSON{}},
		{"malformed JSON untouched", `data: {"choices":[],"usage":{"prompt_tokens":3}` + "\n\n", `data: {"choices":[],"usage":{"prompt_tokens":3}` + "\n\n", usageJSON{}},
		{"trailing garbage untouched", `data: {"usage":null} x` + "\n\n", `data: {"usage":null} x` + "\n\n", usageJSON{}},
		{"comment before usage chunk in same event", ": c\n" + oaUsage + done, ": c\n\n" + done, u341},
		{"two usage chunks in one event", strings.TrimSuffix(oaUsage, "\n") + oaUsage + done, done, u341},
		{"id after dropped line keeps blank", strings.TrimSuffix(oaUsage, "\n") + "id: 7\n\n" + done, "id: 7\n\n" + done, u341},
		{"data field named like data", "datum: {\"usage\":null}\n\n", "datum: {\"usage\":null}\n\n", usageJSON{}},
		{"not data", "event: {\"usage\":null}\n\n", "event: {\"usage\":null}\n\n", usageJSON{}},
		{"data without space", "data:{\"a\":1,\"usage\":null}\n\n", "data:{\"a\":1}\n\n", usageJSON{}},
		{"data with two spaces", "data:  {\"a\":1,\"usage\":null}\n\n", "data:  {\"a\":1,\"usage\":null}\n\n", usageJSON{}},
		{"crlf", strings.ReplaceAll(oaNull+oaUsage+done, "\n", "\r\n"), strings.ReplaceAll(oaPlain+done, "\n", "\r\n"), u341},
		{"mixed endings", strings.ReplaceAll(oaNull, "\n", "\r") + strings.ReplaceAll(oaUsage, "\n", "\r\n") + done, strings.ReplaceAll(oaPlain, "\n", "\r") + done, u341},
		{"crlf split from its line", oaNull[:len(oaNull)-2] + "\r\n\r\n" + strings.TrimSuffix(oaUsage, "\n\n") + "\r\n\r\n", oaPlain[:len(oaPlain)-2] + "\r\n\r\n", u341},
		{"unfinished last line is passed unchanged", oaNull + `data: {"usage":null}`, oaPlain + `data: {"usage":null}`, usageJSON{}},
		{"usage counts null", `data: {"choices":[],"usage":{"prompt_tokens":null,"completion_tokens":2}}` + "\n\n", "", usageJSON{CompletionTokens: ptr(2)}},
		{"negative and fractional counts unknown", `data: {"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":2.5,"total_tokens":"3"}}` + "\n\n", "", usageJSON{}},
		{"empty usage object keeps earlier usage", oaUsage + `data: {"choices":[],"usage":{}}` + "\n\n", "", u341},
		{"last usage wins", oaUsage + `data: {"choices":[],"usage":{"prompt_tokens":9}}` + "\n\n", "", usageJSON{PromptTokens: ptr(9)}},
		{"escaped key is read", `data: {"choices":[],"\u0075sage":{"prompt_tokens":5}}` + "\n\n", "", usageJSON{PromptTokens: ptr(5)}},
		{"huge count", `data: {"choices":[],"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775808}}` + "\n\n", "", usageJSON{PromptTokens: ptr(9223372036854775807)}},
		{"responses api names", `data: {"choices":[],"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}}` + "\n\n", "", usageJSON{PromptTokens: ptr(5), CompletionTokens: ptr(6), TotalTokens: ptr(11), CachedTokens: ptr(1), ReasoningTokens: ptr(2)}},
		{"details null", `data: {"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}` + "\n\n", "", usageJSON{PromptTokens: ptr(1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for k := 0; k <= len(tc.in); k = nextSplit(k, len(tc.in)) {
				got, u, err := scan(newChunkReader(nil, []byte(tc.in[:k]), []byte(tc.in[k:])), true, 64)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tc.want {
					t.Fatalf("split at %d: output differs (-want +got):\n%s", k, cmp.Diff(tc.want, string(got)))
				}
				uj := toJSON(u)
				uj.Model = nil
				if diff := cmp.Diff(tc.usage, uj); diff != "" {
					t.Fatalf("split at %d: Usage() differs (-want +got):\n%s", k, diff)
				}
				// Without strip the bytes are the input's, and the usage the same.
				got, u2, err := scan(newChunkReader(nil, []byte(tc.in[:k]), []byte(tc.in[k:])), false, 64)
				if err != nil || string(got) != tc.in {
					t.Fatalf("strip=false split at %d: output %q, %v; want the input", k, got, err)
				}
				if diff := cmp.Diff(u, u2); diff != "" {
					t.Fatalf("strip=false split at %d: Usage() differs from strip=true (-strip +nostrip):\n%s", k, diff)
				}
			}
		})
	}
}

// TestStreamScannerModel takes the model of the first chunk that has one.
func TestStreamScannerModel(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", oaNull + oaUsage, "gpt-4o"},
		{"first wins", `data: {"model":"a"}` + "\n\n" + `data: {"model":"b","usage":{"prompt_tokens":1}}` + "\n\n", "a"},
		{"escaped", `data: {"model":"gpt\u002d4o\n"}` + "\n\n", "gpt-4o\n"},
		{"not a string", `data: {"model":4}` + "\n\n" + `data: {"model":"m"}` + "\n\n", "m"},
		{"none", "data: [DONE]\n\n", ""},
		{"malformed chunk skipped", `data: {"model":"a",}` + "\n\n" + `data: {"model":"b"}` + "\n\n", "b"},
		{"found in the 8th chunk", strings.Repeat(`data: {"id":1}`+"\n\n", 7) + `data: {"model":"m"}` + "\n\n", "m"},
		{"not looked for after 8 chunks", strings.Repeat(`data: {"id":1}`+"\n\n", 8) + `data: {"model":"m"}` + "\n\n", ""},
		{"non-objects do not count", strings.Repeat("data: [1]\n\n: x\n\n", 20) + `data: {"model":"m"}` + "\n\n", "m"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, strip := range []bool{false, true} {
				_, u, err := scan(newChunkReader(nil, []byte(tc.in)), strip, 512)
				if err != nil {
					t.Fatal(err)
				}
				if u.Model != tc.want {
					t.Errorf("strip=%v: Usage().Model = %q, want %q", strip, u.Model, tc.want)
				}
			}
		})
	}
}

// scriptedReader hands out its chunks one per Read. A Read past the script is
// a test failure: it proves the scanner waited for data it did not need.
type scriptedReader struct {
	t      *testing.T
	chunks []string
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		r.t.Errorf("the scanner read again before returning what it had")
		return 0, errors.New("script over")
	}
	n := copy(p, r.chunks[0])
	if n < len(r.chunks[0]) {
		r.chunks[0] = r.chunks[0][n:]
	} else {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func (r *scriptedReader) Close() error { return nil }

// TestStreamScannerNeverWaits checks that each Read returns what the upstream
// has already sent, holding back at most (with strip) an unfinished line.
func TestStreamScannerNeverWaits(t *testing.T) {
	t.Run("strip=false passes a partial event at once", func(t *testing.T) {
		up := &scriptedReader{t: t, chunks: []string{oaNull + "data: {\"id\""}}
		s := NewStreamScanner(up, false)
		buf := make([]byte, 4096)
		n, err := s.Read(buf)
		if want := oaNull + "data: {\"id\""; string(buf[:n]) != want || err != nil {
			t.Fatalf("Read = %q, %v; want %q, nil", buf[:n], err, want)
		}
	})
	t.Run("strip=true returns complete lines and holds the rest", func(t *testing.T) {
		up := &scriptedReader{t: t, chunks: []string{oaNull + "data: {\"id\""}}
		s := NewStreamScanner(up, true)
		buf := make([]byte, 4096)
		n, err := s.Read(buf)
		if string(buf[:n]) != oaPlain || err != nil {
			t.Fatalf("Read = %q, %v; want %q, nil", buf[:n], err, oaPlain)
		}
		// The rest of the line arrives: it is returned at once.
		up.chunks = []string{":\"x\"}\n"}
		n, err = s.Read(buf)
		if want := "data: {\"id\":\"x\"}\n"; string(buf[:n]) != want || err != nil {
			t.Fatalf("second Read = %q, %v; want %q, nil", buf[:n], err, want)
		}
	})
	t.Run("strip=true returns each line as its end arrives", func(t *testing.T) {
		up := &scriptedReader{t: t, chunks: []string{": ping\r"}}
		s := NewStreamScanner(up, true)
		buf := make([]byte, 4096)
		n, err := s.Read(buf)
		if string(buf[:n]) != ": ping\r" || err != nil {
			t.Fatalf("Read = %q, %v; want %q, nil", buf[:n], err, ": ping\r")
		}
		up.chunks = []string{"\n"}
		n, err = s.Read(buf)
		if string(buf[:n]) != "\n" || err != nil {
			t.Fatalf("second Read = %q, %v; want %q, nil", buf[:n], err, "\n")
		}
	})
	t.Run("strip=true reads on after a removed chunk", func(t *testing.T) {
		up := &scriptedReader{t: t, chunks: []string{oaUsage, done}}
		s := NewStreamScanner(up, true)
		buf := make([]byte, 4096)
		n, err := s.Read(buf)
		if string(buf[:n]) != done || err != nil {
			t.Fatalf("Read = %q, %v; want %q, nil", buf[:n], err, done)
		}
	})
}

// TestStreamScannerErrors checks that an upstream error comes after every
// byte read before it, and that Done tells a cut stream from a finished one.
func TestStreamScannerErrors(t *testing.T) {
	cut := errors.New("unexpected EOF")
	for _, strip := range []bool{false, true} {
		up := newChunkReader(cut, []byte(oaNull), []byte(oaUsage[:30]))
		s := NewStreamScanner(up, strip)
		got, err := readAll(s, 4096)
		if !errors.Is(err, cut) {
			t.Errorf("strip=%v: error = %v, want %v", strip, err, cut)
		}
		want := oaNull + oaUsage[:30]
		if strip {
			want = oaPlain + oaUsage[:30]
		}
		if string(got) != want {
			t.Errorf("strip=%v: output = %q, want %q", strip, got, want)
		}
		if s.Done() {
			t.Errorf("strip=%v: Done() = true for a cut stream", strip)
		}
		if u := s.Usage(); u.Known() || u.Model != "gpt-4o" {
			t.Errorf("strip=%v: Usage() = %+v, want only the model", strip, u)
		}
		// Reading again repeats the error.
		if n, err := s.Read(make([]byte, 10)); n != 0 || !errors.Is(err, cut) {
			t.Errorf("strip=%v: Read after the error = %d, %v", strip, n, err)
		}
		if err := s.Close(); err != nil || !up.closed {
			t.Errorf("strip=%v: Close() = %v, upstream closed = %v", strip, err, up.closed)
		}
	}
}

func TestStreamScannerEmptyRead(t *testing.T) {
	s := NewStreamScanner(newChunkReader(nil, []byte(oaUsage)), true)
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
	if u := s.Usage(); u.Known() || u.Model != "" {
		t.Errorf("Usage() before any read = %+v, want unknown", u)
	}
}

// TestStreamScannerLongLines checks lines longer than the side buffer: they
// pass through unread, whatever the read pattern.
func TestStreamScannerLongLines(t *testing.T) {
	long := `data: {"choices":[],"usage":{"prompt_tokens":1},"pad":"` + strings.Repeat("x", 400) + `"}`
	in := oaNull + long + "\n\n" + long + "\r\n\r\n" + oaUsage + long
	want := oaPlain + long + "\n\n" + long + "\r\n\r\n" + long
	for _, strip := range []bool{false, true} {
		for k := 0; k <= len(in); k++ {
			s := NewStreamScanner(newChunkReader(nil, []byte(in[:k]), []byte(in[k:])), strip)
			s.max = 200
			got, err := readAll(s, 33)
			w := in
			if strip {
				w = want
			}
			if err != nil || string(got) != w {
				t.Fatalf("strip=%v split %d: output differs (-want +got):\n%s", strip, k, cmp.Diff(w, string(got)))
			}
			if u := s.Usage(); u.PromptTokens == nil || *u.PromptTokens != 3 {
				t.Fatalf("strip=%v split %d: Usage() = %+v, want the short usage chunk's", strip, k, toJSON(u))
			}
		}
	}
}

// TestStreamScannerLongLineSmallReads feeds a long line one byte per read:
// the held line must not be copied once per read (that took minutes).
func TestStreamScannerLongLineSmallReads(t *testing.T) {
	in := `data: {"a":"` + strings.Repeat("x", 900<<10) + `","usage":null}` + "\n\n"
	want := strings.Replace(in, `,"usage":null`, "", 1)
	got, _, err := scan(readCloser{iotest.OneByteReader(strings.NewReader(in))}, true, 3)
	if err != nil || string(got) != want {
		t.Errorf("got %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}

// TestStreamScannerHugeLine passes a 5 MB data line (a base64 image, say)
// without strip and checks that the scanner allocated no more than its
// bounded side buffer for it.
func TestStreamScannerHugeLine(t *testing.T) {
	line := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("QUJD", 5<<20/4) + "\"}}]}\n\n"
	in := []byte(oaNull + line + oaUsage + done)
	buf := make([]byte, 32<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := NewStreamScanner(readCloser{bytes.NewReader(in)}, false)
	var n int
	for range len(in) {
		k, err := s.Read(buf)
		n += k
		if err != nil {
			break
		}
	}
	runtime.ReadMemStats(&after)
	if n != len(in) {
		t.Fatalf("read %d bytes, want %d", n, len(in))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*maxLine {
		t.Errorf("allocated %d bytes for a %d byte line, want at most %d", alloc, len(line), 3*maxLine)
	}
	if u := s.Usage(); u.PromptTokens == nil || *u.PromptTokens != 3 {
		t.Errorf("Usage() = %+v, want the usage chunk after the long line", toJSON(u))
	}
	// With strip, the long line passes too, and the usage chunk is removed.
	got, u, err := scan(readCloser{iotest.HalfReader(bytes.NewReader(in))}, true, 32<<10)
	if want := oaPlain + line + done; err != nil || string(got) != want {
		t.Errorf("strip=true: got %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if u.PromptTokens == nil || *u.PromptTokens != 3 {
		t.Errorf("strip=true: Usage() = %+v", toJSON(u))
	}
}

// TestStreamScannerAllocs holds the allocation budget: per stream, not per
// event. Only the first chunk (for the model) and the usage chunk are decoded
// in full; every other event is passed on without allocating, so a 1000-event
// stream allocates as much as a 100-event one.
func TestStreamScannerAllocs(t *testing.T) {
	buf := make([]byte, 16<<10)
	allocs := func(in []byte, strip bool) float64 {
		r := bytes.NewReader(in)
		return testing.AllocsPerRun(20, func() {
			r.Reset(in)
			s := NewStreamScanner(readCloser{r}, strip)
			for range len(in) {
				if _, err := s.Read(buf); err != nil {
					break
				}
			}
			_ = s.Usage()
		})
	}
	short, long := benchStream(100), benchStream(1000)
	for _, strip := range []bool{false, true} {
		if a, b := allocs(short, strip), allocs(long, strip); b > a+2 {
			t.Errorf("strip=%v: %v allocations for 100 events, %v for 1000: want no more per event", strip, a, b)
		}
	}
}

// TestStreamScannerStripBufferGrowsOnlyWhenNeeded: a stripping scanner
// reads usual chunks of a few hundred bytes into its first 1 KiB buffer,
// however the upstream cuts them; a usage chunk of several KiB grows the
// buffer to hold it whole, so that it is still read and removed.
func TestStreamScannerStripBufferGrowsOnlyWhenNeeded(t *testing.T) {
	pad := `data: {"id":"x","choices":[],"usage":{"prompt_tokens":7},"pad":"` + strings.Repeat("p", 6<<10) + `"}` + "\n\n"
	tests := []struct {
		name    string
		in      string
		want    string
		wantBuf int // the read buffer's size at the end
	}{
		{"short chunks", strings.Repeat(oaNull, 50) + oaUsage + done, strings.Repeat(oaPlain, 50) + done, 1 << 10},
		{"a 6 KiB usage chunk", oaNull + pad + done, oaPlain + done, 8 << 10},
	}
	for _, tc := range tests {
		for _, per := range []int{7, 100, 4 << 10, 64 << 10} {
			t.Run(tc.name+"/reads_of_"+strconv.Itoa(per), func(t *testing.T) {
				up := readCloser{&cutReader{r: strings.NewReader(tc.in), n: per}}
				s := NewStreamScanner(up, true)
				got, err := readAll(s, 32<<10)
				if err != nil || string(got) != tc.want {
					t.Fatalf("output differs (-want +got):\n%s", cmp.Diff(tc.want, string(got)))
				}
				if len(s.buf) != tc.wantBuf {
					t.Errorf("read buffer = %d bytes, want %d", len(s.buf), tc.wantBuf)
				}
			})
		}
	}
}

// cutReader returns at most n bytes per Read.
type cutReader struct {
	r io.Reader
	n int
}

func (c *cutReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }
