package openai

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzInspectRequest checks InspectRequest against encoding/json: the same
// validity (InspectRequest also refuses invalid UTF-8), a Problem exactly
// when a top-level key it reads is repeated, differs only in case or has the
// wrong type, and otherwise the same model, stream and include_usage.
func FuzzInspectRequest(f *testing.F) {
	for _, tc := range inspectTests {
		f.Add([]byte(tc.body))
	}
	f.Add(benchRequest()[:4096])
	f.Add([]byte(`{"model":"\ud83d\ude00\udc00\ud800x","stream":true,"stream_options":{"include_usage":true},"stream_options":null}`))
	f.Add([]byte(`{"model":"\ud83d\ude00\udc00\ud800x","stream":true,"stream_options":{"include_usage":true,"x":[{}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got := InspectRequest(body)
		valid := utf8.Valid(body) && json.Valid(body) && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{"))
		if got.Valid != valid {
			t.Fatalf("InspectRequest(%q).Valid = %v, encoding/json says %v", body, got.Valid, valid)
		}
		if !valid {
			if got.Problem == "" || got != (RequestInfo{Problem: got.Problem}) {
				t.Fatalf("InspectRequest(%q) = %+v: want only a Problem", body, got)
			}
			return
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("json.Unmarshal(%q): %v", body, err)
		}
		want := RequestInfo{Valid: true}
		ambiguous := repeatedOrFolded(t, body, "model", "stream", "stream_options")
		if raw, ok := top["model"]; ok {
			ambiguous = ambiguous || raw[0] != '"'
			_ = json.Unmarshal(raw, &want.Model)
		}
		if raw, ok := top["stream"]; ok {
			ambiguous = ambiguous || raw[0] != 't' && raw[0] != 'f' && raw[0] != 'n'
			want.Stream = string(raw) == "true"
		}
		if raw, ok := top["stream_options"]; ok {
			switch raw[0] {
			case '{':
				var so map[string]json.RawMessage
				if err := json.Unmarshal(raw, &so); err != nil {
					t.Fatal(err)
				}
				want.IncludeUsage = string(so["include_usage"]) == "true"
				ambiguous = ambiguous || repeatedOrFolded(t, raw, "include_usage")
			case 'n':
			default:
				ambiguous = true
			}
		}
		if ambiguous {
			want = RequestInfo{Valid: true, Problem: got.Problem}
			if got.Problem == "" {
				t.Fatalf("InspectRequest(%q) = %+v: want a Problem", body, got)
			}
		}
		if got != want {
			t.Fatalf("InspectRequest(%q) = %+v, encoding/json says %+v", body, got, want)
		}
	})
}

// repeatedOrFolded reports whether the JSON object b has a top-level key
// equal to one of names more than once, or equal to one ignoring case only.
// It walks b token by token.
func repeatedOrFolded(t *testing.T, b []byte, names ...string) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	seen := map[string]int{}
	depth, key := 0, true
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Token(%q): %v", b, err)
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
		case string:
			if depth == 1 && key {
				for _, n := range names {
					if strings.EqualFold(v, n) {
						seen[n]++
						if v != n {
							seen[n] += 2
						}
					}
				}
				key = false
				continue
			}
		}
		if depth == 1 {
			key = true
		}
	}
	for _, n := range seen {
		if n > 1 {
			return true
		}
	}
	return false
}

// FuzzInjectIncludeUsage checks that an injected body is valid JSON that
// asks for usage, with everything else as it was.
func FuzzInjectIncludeUsage(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true}`,
		` { "stream" : true , "stream_options" : { } } `,
		`{"stream":true,"stream_options":{"a":[1,{"b":null}],"include_usage":false}}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":{"include_usage":true}}`,
		`{"stream":true,"stream_options":"x"}`,
		`{"stream":true,"stream":true}`,
		`{"str\u0065am":true,"stream_\u006fptions":{"include_\u0075sage":0}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		out, ok := InjectIncludeUsage(body)
		if !bytes.Equal(body, orig) {
			t.Fatalf("InjectIncludeUsage modified its input")
		}
		if out2, ok2 := Inspect(body).InjectIncludeUsage(); ok2 != ok || !bytes.Equal(out2, out) {
			t.Fatalf("Inspect(%q).InjectIncludeUsage() = %q, %v; InjectIncludeUsage: %q, %v", body, out2, ok2, out, ok)
		}
		if !ok {
			if !bytes.Equal(out, body) {
				t.Fatalf("InjectIncludeUsage(%q) = %q, false: body changed", body, out)
			}
			return
		}
		checkInjected(t, body, out)
	})
}

// FuzzStreamScanner checks that the scanner never panics; that without strip
// its output is its input, byte for byte; that with strip the output is never
// longer and does not depend on how the reads are cut; and that the usage is
// the same in every case.
func FuzzStreamScanner(f *testing.F) {
	ins, _ := filepath.Glob(filepath.Join(sseDir, "*.in"))
	for _, in := range ins {
		if b, err := os.ReadFile(in); err == nil {
			f.Add(b, uint64(len(b)), false)
		}
	}
	f.Add([]byte(oaNull+oaUsage+done), uint64(1), true)
	f.Add([]byte("data: {\"a\":\"x\\\",\"usage\":null}\ndata: { \"usage\" : null }\ndata: {\"a\":[1] ,\"usage\":null }\n"), uint64(2), false)
	f.Add([]byte("data: {\"usage\":null}\r\r\n\n: x\rdata:{\"choices\":[],\"usage\":{}}\r\n\r\n"), uint64(7), false)
	f.Add([]byte("data: {\"usage\" : null , \"a\":\"\\\"usage\\\":1\"}\ndata: {\"choices\":[ ],\"usage\":{\"prompt_tokens\":1}}\n\n"), uint64(3), true)
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, short bool) {
		maxLen := maxLine
		if short {
			maxLen = 48 // exercise the long-line path
		}
		run := func(strip bool, chunks [][]byte, bufN int) ([]byte, Usage) {
			cl := make([][]byte, len(chunks))
			for i, c := range chunks {
				cl[i] = bytes.Clone(c)
			}
			s := NewStreamScanner(newChunkReader(nil, cl...), strip)
			s.max = maxLen
			out, err := readAll(s, bufN)
			if err != nil {
				t.Fatalf("strip=%v: %v", strip, err)
			}
			return out, s.Usage()
		}
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		var random, ones [][]byte
		for b := data; len(b) > 0; {
			n := min(1+rng.IntN(64), len(b))
			random = append(random, b[:n])
			b = b[n:]
		}
		if len(data) <= 4096 { // one byte per read; long inputs get random reads only
			for i := range data {
				ones = append(ones, data[i:i+1])
			}
		}
		whole := [][]byte{data}
		bufN := 1 + rng.IntN(100)

		ref, refU := run(false, whole, 4096)
		if !bytes.Equal(ref, data) {
			t.Fatalf("strip=false: output %q != input %q", ref, data)
		}
		for _, c := range [][][]byte{random, ones} {
			out, u := run(false, c, bufN)
			if !bytes.Equal(out, data) {
				t.Fatalf("strip=false chunked: output %q != input %q", out, data)
			}
			if !equalUsage(u, refU) {
				t.Fatalf("strip=false chunked: usage %+v != %+v", toJSON(u), toJSON(refU))
			}
		}
		st, stU := run(true, whole, 4096)
		if len(st) > len(data) {
			t.Fatalf("strip=true: output longer than input: %q -> %q", data, st)
		}
		if !equalUsage(stU, refU) {
			t.Fatalf("strip=true: usage %+v != strip=false usage %+v", toJSON(stU), toJSON(refU))
		}
		for _, c := range [][][]byte{random, ones} {
			out, u := run(true, c, bufN)
			if !bytes.Equal(out, st) {
				t.Fatalf("strip=true: output depends on read sizes:\nwhole:   %q\nchunked: %q\ninput:   %q", st, out, data)
			}
			if !equalUsage(u, refU) {
				t.Fatalf("strip=true chunked: usage %+v != %+v", toJSON(u), toJSON(refU))
			}
		}
		// The "usage":null fast path agrees with the full walk.
		for _, l := range bytes.Split(data, []byte("\n")) {
			p, ok := bytes.CutPrefix(bytes.TrimSuffix(l, []byte("\r")), []byte("data: "))
			u := bytes.Index(p, usageKey)
			if !ok || len(p) == 0 || p[0] != '{' || u < 0 {
				continue
			}
			c0, c1, fast := lastNullUsage(p, u)
			c, valid := walkChunk(p)
			if fast && valid && c.usages == 1 && (c.usageKind() != 'n' || c.cut0 != c0 || c.cut1 != c1) {
				t.Fatalf("lastNullUsage(%q) = %d, %d; walkChunk: %+v", p, c0, c1, c)
			}
		}
		// The body scanner never panics and passes bytes on unchanged.
		b := NewBodyScanner(readCloser{bytes.NewReader(data)}, 1<<20)
		if out, err := io.ReadAll(b); err != nil || !bytes.Equal(out, data) {
			t.Fatalf("BodyScanner changed the body")
		}
		_ = b.Usage()
	})
}

func equalUsage(a, b Usage) bool {
	ja, _ := json.Marshal(toJSON(a))
	jb, _ := json.Marshal(toJSON(b))
	return bytes.Equal(ja, jb)
}
