// Package logbuf batches log lines: a request's log line costs a copy into
// memory, and a system call is made at most every interval (or when a
// buffer fills), instead of one write per proxied request.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// Writer buffers what is written to it and writes it to the underlying
// writer in order, at most interval after it was written. Close writes
// what is left. Write never waits for the underlying writer unless a
// buffer of Size bytes is full.
type Writer struct {
	w        io.Writer
	interval time.Duration

	out sync.Mutex // held while writing to w: flushes stay in order

	mu     sync.Mutex
	buf    []byte
	spare  []byte
	timer  *time.Timer
	armed  bool
	closed bool
}

// Size is the buffer size past which a Write flushes at once.
const Size = 64 << 10

// New returns a Writer that writes to w at most interval after each Write.
func New(w io.Writer, interval time.Duration) *Writer {
	b := &Writer{w: w, interval: interval, buf: make([]byte, 0, 4<<10)}
	b.timer = time.AfterFunc(time.Hour, func() { b.Flush() })
	b.timer.Stop()
	return b
}

// Write keeps a copy of p. After Close it writes through.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.out.Lock()
		defer b.out.Unlock()
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	full := len(b.buf) >= Size
	if !full && !b.armed {
		b.armed = true
		b.timer.Reset(b.interval)
	}
	b.mu.Unlock()
	if full {
		if err := b.Flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what is buffered.
func (b *Writer) Flush() error {
	b.out.Lock()
	defer b.out.Unlock()
	b.mu.Lock()
	data := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.armed = false
	b.mu.Unlock()
	var err error
	if len(data) > 0 {
		_, err = b.w.Write(data)
	}
	if cap(data) <= Size*2 {
		b.mu.Lock()
		b.spare = data[:0]
		b.mu.Unlock()
	}
	return err
}

// Close writes what is buffered; later writes go straight through.
func (b *Writer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.timer.Stop()
	b.mu.Unlock()
	return b.Flush()
}

// Immediate returns a writer into the same stream whose writes are written
// out at once, after whatever was buffered before them: for the lines an
// operator waits for (startup, warnings), in order with the batched ones.
func (b *Writer) Immediate() io.Writer { return immediate{b} }

type immediate struct{ b *Writer }

func (i immediate) Write(p []byte) (int, error) {
	if _, err := i.b.Write(p); err != nil {
		return 0, err
	}
	return len(p), i.b.Flush()
}
