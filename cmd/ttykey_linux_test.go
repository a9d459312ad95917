package cmd

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// TestProviderAdd_keyAtTerminalEndsAtEnter: on a terminal, `provider add
// HOST -` prompts "key: " on stderr, reads one line without echoing it, and
// is done at Enter: the terminal stays open, no Ctrl-D is needed.
func TestProviderAdd_keyAtTerminalEndsAtEnter(t *testing.T) {
	t.Parallel()
	ptm, pts := openPTY(t)
	defer pts.Close()
	echoed := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		io.Copy(&buf, ptm)
		echoed <- buf.Bytes()
	}()
	db := newDBPath(t)
	var out bytes.Buffer
	errOut := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- Execute(t.Context(), []string{"--db", db, "provider", "add", "api.openai.com", "-"}, Streams{In: pts, Out: &out, Err: errOut})
	}()
	// Type the key and Enter, once the prompt is up (echo is off by then).
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errOut.String(), "key: ") {
		if time.Now().After(deadline) {
			t.Fatal("no key: prompt")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := ptm.Write([]byte("sk-proj-typed-at-the-prompt\r")); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("provider add on a terminal: exit %d, stderr %q", code, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("provider add still reading after Enter")
	}
	pts.Close()
	if got := <-echoed; bytes.Contains(got, []byte("sk-proj-typed")) {
		t.Errorf("the key was echoed to the terminal: %q", got)
	}
	p, err := openService(t, db).Provider(t.Context(), "api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keys) != 1 || p.Keys[0] != "sk-proj-typed-at-the-prompt" {
		t.Errorf("stored keys = %q, want the typed one", p.Keys)
	}
}
