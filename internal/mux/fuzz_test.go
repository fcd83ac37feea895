package mux

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// scriptedConn is the server's end of a connection whose peer sends in,
// waits for want response frames (or the server's close, or a second), and
// then ends its side. What the server writes is kept for inspection.
// Deadlines are accepted and ignored: the input ends, so nothing stalls.
type scriptedConn struct {
	in     *bytes.Reader
	want   int
	mu     sync.Mutex
	out    bytes.Buffer
	got    chan struct{} // closed once want frames were written
	closed chan struct{}
	once   sync.Once
}

func newScriptedConn(in []byte, want int) *scriptedConn {
	c := &scriptedConn{in: bytes.NewReader(in), want: want, got: make(chan struct{}), closed: make(chan struct{})}
	if want == 0 {
		close(c.got)
	}
	return c
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	n, err := c.in.Read(p)
	if err == io.EOF {
		select {
		case <-c.got:
		case <-c.closed:
			return 0, net.ErrClosed
		case <-time.After(time.Second):
		}
	}
	return n, err
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	n, err := c.out.Write(p)
	if c.want > 0 && countFrames(c.out.Bytes()) == c.want {
		close(c.got)
	}
	return n, err
}

// countFrames counts the whole frames at the start of b.
func countFrames(b []byte) int {
	n := 0
	for len(b) >= 4 {
		size := 4 + int(binary.BigEndian.Uint32(b))
		if len(b) < size {
			break
		}
		b = b[size:]
		n++
	}
	return n
}

func (c *scriptedConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

func (c *scriptedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

var scriptedAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

func (c *scriptedConn) LocalAddr() net.Addr              { return scriptedAddr }
func (c *scriptedConn) RemoteAddr() net.Addr             { return scriptedAddr }
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }

// cleanEnd reports whether b is whole well-formed frames and nothing else.
func cleanEnd(b []byte) bool {
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		if _, _, _, err := readFrame(br); err != nil {
			return err == io.EOF
		}
	}
}

// chanListener accepts the connections sent on conns.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return scriptedAddr }

// FuzzFrameReader sends arbitrary bytes to a Mux with an RPC Server behind
// it, as anyone reaching the cluster port can: the first byte is the service
// byte, the rest the frames. The node must not crash or hang; it must close
// the connection; and it may answer only the request frames it was sent
// (every response echoes one request's ID and payload), never garbage.
func FuzzFrameReader(f *testing.F) {
	req := func(id uint64, p string) []byte { return appendFrame(nil, id, 0, []byte(p)) }
	f.Add(append([]byte{svcRPC}, req(1, "hello")...))
	f.Add(append(append([]byte{svcRPC}, req(1, "a")...), req(1<<40, "b")...))
	f.Add([]byte{svcRPC, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // 4 GiB announced
	f.Add([]byte{svcRPC, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3})    // 64 MiB announced, 3 bytes sent
	f.Add(append([]byte{svcRPC}, req(7, "half a frame")[:15]...))            // half a frame
	f.Add(append([]byte{svcA}, req(1, "to a service that is not RPC")...))   // routed elsewhere
	f.Add(append([]byte{0x7f}, req(1, "unknown service")...))                // dropped
	f.Add([]byte{})

	ln := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	m := New(ln, nil)
	la := m.Listen(svcA)
	srv := NewServer(m.Listen(svcRPC), func(_ context.Context, method byte, p []byte) ([]byte, error) {
		return append([]byte{method}, p...), nil
	})
	serve(f, m.Serve, m.Close)
	serve(f, srv.Serve, srv.Close)
	go func() { // service A's connections are closed unread
		for {
			c, err := la.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	f.Fuzz(func(t *testing.T, data []byte) {
		// The requests the server may answer: the frames that decode.
		sent := map[uint64][][]byte{}
		requests := 0
		if len(data) > 0 && data[0] == svcRPC {
			br := bufio.NewReader(bytes.NewReader(data[1:]))
			for {
				id, method, payload, err := readFrame(br)
				if err != nil {
					break
				}
				sent[id] = append(sent[id], append([]byte{method}, payload...))
				requests++
			}
		}

		conn := newScriptedConn(data, requests)
		select {
		case ln.conns <- conn:
		case <-time.After(5 * time.Second):
			t.Fatal("the mux does not accept")
		}
		select {
		case <-conn.closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("the connection is still open after its peer's side ended")
		}

		// Whatever was written before the close: whole response frames,
		// each echoing a request.
		out := conn.written()
		br := bufio.NewReader(bytes.NewReader(out))
		for {
			id, status, payload, err := readFrame(br)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("response stream: %v", err)
			}
			if status != statusOK {
				t.Fatalf("response %d: status %d", id, status)
			}
			found := false
			for _, want := range sent[id] {
				found = found || bytes.Equal(want, payload)
			}
			if !found {
				t.Fatalf("response %d (%q) answers no request", id, payload)
			}
		}
		// The peer waited for its answers before ending its side: every
		// request that was not followed by a bad frame (whose refusal
		// closes the connection at once) was answered.
		if got := countFrames(out); requests > 0 && got != requests && cleanEnd(data[1:]) {
			t.Fatalf("%d requests, %d responses", requests, got)
		}
	})
}
