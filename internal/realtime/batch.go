package realtime

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// The WebSocket library flushes its buffered writer after every message,
// which is one write system call per frame: at tens of thousands of frames
// per second that call is most of the server's CPU. batchWriter sits under
// the library's buffer and, while the connection's writer goroutine is
// draining its queue, gathers those flushes so that every frame that was
// already waiting goes out in one system call. Frames stay separate
// WebSocket messages: the protocol is unchanged, and nothing waits for a
// batch to fill (a lone frame is written as soon as it is taken).
type batchWriter struct {
	conn net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte
	err      error
}

// maxBatch bounds how much is gathered before it is written anyway.
const maxBatch = 64 << 10

// Write implements io.Writer for the library's bufio.Writer.
func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.batching {
		return b.conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= maxBatch {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// begin starts gathering writes.
func (b *batchWriter) begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// end writes what was gathered in one call and stops gathering.
func (b *batchWriter) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	return b.flushLocked()
}

func (b *batchWriter) flushLocked() error {
	if len(b.buf) == 0 || b.err != nil {
		return b.err
	}
	_, err := b.conn.Write(b.buf)
	b.buf = b.buf[:0]
	if err != nil {
		b.err = err
	}
	return err
}

// hijackResponse hands the WebSocket library a connection whose writes go
// through a batchWriter.
type hijackResponse struct {
	http.ResponseWriter
	batch *batchWriter
}

// Hijack implements http.Hijacker.
func (h *hijackResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// net/http has flushed the 101 response and returns an empty writer, so
	// replacing it loses nothing.
	h.batch = &batchWriter{conn: conn, buf: make([]byte, 0, 4096)}
	brw.Writer = bufio.NewWriterSize(h.batch, 4096)
	return conn, brw, nil
}
