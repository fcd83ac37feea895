package mux

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// MaxFrameSize is the largest accepted value of a frame's length field, i.e.
// the size of a frame not counting the 4-byte length itself. A request or
// response payload can therefore be at most MaxFrameSize-9 bytes.
const MaxFrameSize = 64 << 20

const (
	frameHeaderLen = 4 + 8 + 1 // length, request ID, method/status
	maxPayload     = MaxFrameSize - (frameHeaderLen - 4)
	readChunk      = 64 << 10 // initial payload buffer; grown as data arrives
	bufSize        = 64 << 10 // bufio size per connection direction
	writeTimeout   = 10 * time.Second

	statusOK    byte = 0
	statusError byte = 1
)

var (
	errFrameTooLarge  = errors.New("mux: frame exceeds MaxFrameSize")
	errMalformedFrame = errors.New("mux: malformed frame")
	errIdle           = errors.New("mux: connection idle")
)

// appendFrame appends a frame carrying id, kind (method or status) and
// payload to dst. len(payload) must be at most maxPayload.
func appendFrame(dst []byte, id uint64, kind byte, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(frameHeaderLen-4+len(payload)))
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = append(dst, kind)
	return append(dst, payload...)
}

func newFrame(id uint64, kind byte, payload []byte) []byte {
	return appendFrame(make([]byte, 0, frameHeaderLen+len(payload)), id, kind, payload)
}

// readFrame reads one frame from br. The returned payload is freshly
// allocated (nil if empty) and may be retained by the caller. It returns
// io.EOF only if br ended cleanly before a frame started. Memory use is
// bounded by the bytes actually received, never by the declared length alone.
func readFrame(br *bufio.Reader) (id uint64, kind byte, payload []byte, err error) {
	hdr, err := br.Peek(frameHeaderLen)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr)
	switch {
	case n < frameHeaderLen-4:
		return 0, 0, nil, errMalformedFrame
	case n > MaxFrameSize:
		return 0, 0, nil, errFrameTooLarge
	}
	id = binary.BigEndian.Uint64(hdr[4:])
	kind = hdr[12]
	if _, err := br.Discard(frameHeaderLen); err != nil {
		return 0, 0, nil, err
	}
	payload, err = readPayload(br, int(n)-(frameHeaderLen-4))
	return id, kind, payload, err
}

// readPayload reads exactly n bytes, growing its buffer geometrically from
// readChunk so that a peer cannot make us allocate a large declared size
// without sending the data. The buffer's capacity never exceeds n.
func readPayload(r io.Reader, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, 0, min(n, readChunk))
	for {
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(buf) == n {
			return buf, nil
		}
		grown := make([]byte, len(buf), min(2*cap(buf), n))
		copy(grown, buf)
		buf = grown
	}
}

// nextFrame reads the next frame from f, bounding the wait for its first
// byte by idle and the rest of it by frame (0: no bound). When idle elapses
// with no frame started, it asks keep whether to wait another idle period;
// if keep reports false it returns errIdle, and whatever keep did (such as
// retiring the connection) stands. The caller must be f's only reader.
func (f *frameConn) nextFrame(idle, frame time.Duration, keep func() bool) (id uint64, kind byte, payload []byte, err error) {
	for f.br.Buffered() == 0 {
		if err := f.setReadDeadline(idle); err != nil {
			return 0, 0, nil, err
		}
		_, err := f.br.Peek(1)
		if err == nil {
			break
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return 0, 0, nil, err
		}
		if !keep() {
			return 0, 0, nil, errIdle
		}
	}
	if err := f.setReadDeadline(frame); err != nil {
		return 0, 0, nil, err
	}
	return readFrame(f.br)
}

// setReadDeadline sets f's read deadline d from now (0: none), skipping the
// call when there is neither a deadline to set nor one to clear.
func (f *frameConn) setReadDeadline(d time.Duration) error {
	if d <= 0 {
		if !f.deadline {
			return nil
		}
		f.deadline = false
		return f.nc.SetReadDeadline(time.Time{})
	}
	f.deadline = true
	return f.nc.SetReadDeadline(time.Now().Add(d))
}

// frameConn is a framed connection with a dedicated writer goroutine that
// serializes frames and batches flushes: it flushes only once no further
// frame is queued, so a burst of concurrent frames costs one syscall.
type frameConn struct {
	nc    net.Conn
	br    *bufio.Reader
	sendq chan []byte
	done  chan struct{} // closed by shutdown
	once  sync.Once

	deadline bool // a read deadline is set; owned by the reader
}

func newFrameConn(nc net.Conn) *frameConn {
	return &frameConn{
		nc:    nc,
		br:    bufio.NewReaderSize(nc, bufSize),
		sendq: make(chan []byte, 256),
		done:  make(chan struct{}),
	}
}

// shutdown closes the connection and stops the writer. Idempotent.
func (f *frameConn) shutdown() {
	f.once.Do(func() {
		close(f.done)
		f.nc.Close()
	})
}

// writeLoop writes queued frames until shutdown. On a write error it calls
// fail and returns. Each batch must complete within writeTimeout, so a peer
// that stops reading breaks the connection instead of stalling it forever.
func (f *frameConn) writeLoop(fail func(error)) {
	bw := bufio.NewWriterSize(f.nc, bufSize)
	for {
		select {
		case fr := <-f.sendq:
			if err := f.writeBatch(bw, fr); err != nil {
				fail(err)
				return
			}
		case <-f.done:
			return
		}
	}
}

func (f *frameConn) writeBatch(bw *bufio.Writer, fr []byte) error {
	if err := f.nc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	for {
		if _, err := bw.Write(fr); err != nil {
			return err
		}
		select {
		case fr = <-f.sendq:
		default:
			return bw.Flush()
		}
	}
}
