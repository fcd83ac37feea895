package mux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dialTimeout bounds a Client's (re)dial of a remote address.
const dialTimeout = 5 * time.Second

var (
	// ErrClosed is returned by calls on, or in flight during the close of, a
	// closed Client.
	ErrClosed = errors.New("mux: closed")

	// ErrConnection wraps transport failures (dial failed, connection broke
	// mid-call): the request may or may not have been processed by the
	// server. Callers use errors.Is(err, mux.ErrConnection).
	ErrConnection = errors.New("mux: connection failed")
)

// RemoteError is the error returned by Call when the remote handler failed.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "mux: remote: " + e.Msg }

// Handler serves one request. ctx is cancelled when the server closes or the
// request's connection is lost; PeerFromContext(ctx) is its caller. The
// returned bytes are the response payload; a non-nil error is sent back as a *RemoteError carrying err.Error().
// Handlers run concurrently, one goroutine per request, and may retain
// payload. A panicking handler crashes the process.
type Handler func(ctx context.Context, method byte, payload []byte) ([]byte, error)

// Server serves RPC requests arriving on a listener, typically one returned
// by Mux.Listen, whose [Limits] it applies to every connection (the default
// Limits on any other listener): a connection is closed when a frame takes
// longer than FrameTimeout to arrive, or when it sends nothing for
// IdleTimeout while none of its requests is in flight. It does not limit the
// number of concurrent handlers; peers are trusted cluster members.
type Server struct {
	ln     net.Listener
	h      Handler
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	closeOnce sync.Once
	wg        sync.WaitGroup // connection and handler goroutines

	mu     sync.Mutex
	closed bool
	conns  map[*frameConn]struct{}
}

// NewServer returns a Server that will answer requests on ln with h.
func NewServer(ln net.Listener, h Handler) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{ln: ln, h: h, ctx: ctx, cancel: cancel, conns: make(map[*frameConn]struct{})}
}

// Serve accepts connections and serves their requests, each in its own
// goroutine; responses are written as handlers finish, possibly out of
// order. It returns nil after Close; if the listener is closed by someone
// else (e.g. its Mux) it returns an error wrapping net.ErrClosed.
func (s *Server) Serve() error {
	return acceptLoop(s.ln, s.ctx.Done(), func(nc net.Conn) {
		limits := Limits{}.withDefaults()
		if ml, ok := s.ln.(interface{ limits() Limits }); ok {
			limits = ml.limits()
		}
		fc := newFrameConn(nc)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			nc.Close()
			return
		}
		s.conns[fc] = struct{}{}
		s.wg.Add(2)
		go s.readLoop(fc, limits)
		go func() {
			defer s.wg.Done()
			fc.writeLoop(func(error) { fc.shutdown() })
		}()
	})
}

func (s *Server) readLoop(fc *frameConn, limits Limits) {
	defer s.wg.Done()
	// Handlers learn their caller from ctx, and lose ctx with the connection.
	ctx, cancel := context.WithCancel(withPeer(s.ctx, fc.nc))
	defer cancel()
	var inflight atomic.Int64
	busy := func() bool { return inflight.Load() > 0 }
	for {
		id, method, payload, err := fc.nextFrame(limits.IdleTimeout, limits.FrameTimeout, busy)
		if err != nil {
			break
		}
		inflight.Add(1)
		s.wg.Add(1) // counter is > 0: this goroutine holds one
		go func() {
			defer inflight.Add(-1)
			s.handle(ctx, fc, id, method, payload)
		}()
	}
	fc.shutdown()
	s.mu.Lock()
	delete(s.conns, fc)
	s.mu.Unlock()
}

func (s *Server) handle(ctx context.Context, fc *frameConn, id uint64, method byte, payload []byte) {
	defer s.wg.Done()
	resp, err := s.h(ctx, method, payload)
	var frame []byte
	switch {
	case err != nil:
		msg := err.Error()
		if len(msg) > maxPayload {
			msg = msg[:maxPayload]
		}
		frame = newFrame(id, statusError, []byte(msg))
	case len(resp) > maxPayload:
		frame = newFrame(id, statusError, []byte(errFrameTooLarge.Error()))
	default:
		frame = newFrame(id, statusOK, resp)
	}
	select {
	case fc.sendq <- frame:
	case <-fc.done:
	case <-ctx.Done(): // connection lost or server closing
	}
}

// Close stops accepting, closes the listener and all connections, cancels
// the handlers' contexts and waits for all handler goroutines to return. It
// is idempotent; calls after the first return nil.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := s.conns
		s.conns = map[*frameConn]struct{}{}
		s.mu.Unlock()

		s.cancel()
		err = s.ln.Close()
		for fc := range conns {
			fc.shutdown()
		}
		s.wg.Wait()
	})
	return err
}

// Client calls RPC Servers reached through a Mux. It keeps one multiplexed
// connection per remote address, dialed lazily with the given service byte
// and redialed by the next Call after a failure (there is no backoff).
// Concurrent Calls share the connection; each waits only for its own
// response. A connection with no call in flight that has received nothing
// for half its Mux's [Limits.IdleTimeout] is closed by the Client, before
// the server would close it (given the same setting), so that an idle
// connection never fails a Call: one that finds it closed redials. Responses
// are bound by the Mux's FrameTimeout as requests are on a Server. A Client
// is safe for concurrent use.
type Client struct {
	m       *Mux
	service byte
	ctx     context.Context // cancelled by Close; aborts dials
	cancel  context.CancelFunc
	wg      sync.WaitGroup // dial, reader and writer goroutines

	mu     sync.Mutex
	closed bool
	conns  map[string]*clientConn
}

// NewClient returns a Client dialing service through m. It does no I/O.
func NewClient(m *Mux, service byte) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{m: m, service: service, ctx: ctx, cancel: cancel, conns: make(map[string]*clientConn)}
}

type result struct {
	payload []byte
	err     error
}

// clientConn is the connection to one remote address.
type clientConn struct {
	c    *Client
	addr string

	ready   chan struct{} // closed once the dial finished
	dialErr error         // set before ready is closed
	fc      *frameConn    // set before ready is closed, if the dial succeeded

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan result
	err     error // set once the connection failed
}

// Call sends a request to the Server at addr and waits for its response.
// payload is not retained after Call returns. Errors: a *RemoteError if the
// handler failed; an error wrapping ErrConnection on transport failure;
// ctx.Err() wrapped if ctx ends first (a late response is discarded);
// ErrClosed once the Client is closed.
func (c *Client) Call(ctx context.Context, addr string, method byte, payload []byte) ([]byte, error) {
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("mux: call %s: %w", addr, errFrameTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mux: call %s: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx, addr)
		if err != nil {
			return nil, err
		}
		id, ch, err := cc.register()
		if err != nil {
			// The connection failed before anything was sent, so a
			// single retry on a fresh connection is safe.
			if attempt == 0 && errors.Is(err, ErrConnection) {
				continue
			}
			return nil, err
		}
		return cc.roundTrip(ctx, id, ch, newFrame(id, method, payload))
	}
}

// conn returns the connected clientConn for addr, dialing if needed.
func (c *Client) conn(ctx context.Context, addr string) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	cc := c.conns[addr]
	if cc == nil {
		cc = &clientConn{c: c, addr: addr, ready: make(chan struct{}), pending: make(map[uint64]chan result)}
		c.conns[addr] = cc
		c.wg.Add(1)
		go c.dial(cc)
	}
	c.mu.Unlock()
	select {
	case <-cc.ready:
		if cc.dialErr != nil {
			return nil, cc.dialErr
		}
		return cc, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("mux: call %s: %w", addr, ctx.Err())
	}
}

// dial connects cc in the background, so that all Calls waiting for it can
// give up on their own contexts.
func (c *Client) dial(cc *clientConn) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	nc, err := c.m.Dial(ctx, c.service, cc.addr)
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(cc.ready)
	switch {
	case c.closed:
		if nc != nil {
			nc.Close()
		}
		err = ErrClosed
	case err != nil:
		err = fmt.Errorf("%w: dial %s: %w", ErrConnection, cc.addr, err)
	}
	if err != nil {
		cc.dialErr = err
		if c.conns[cc.addr] == cc {
			delete(c.conns, cc.addr)
		}
		return
	}
	cc.fc = newFrameConn(nc)
	limits := c.m.currentLimits()
	c.wg.Add(2)
	go cc.readLoop(limits.IdleTimeout/2, limits.FrameTimeout)
	go func() {
		defer c.wg.Done()
		cc.fc.writeLoop(func(err error) { cc.fail(cc.connErr(err)) })
	}()
}

// Close closes all connections, failing in-flight calls with ErrClosed, and
// waits for the Client's goroutines. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cancel()
	var live []*clientConn
	for _, cc := range c.conns {
		if cc.fc != nil {
			live = append(live, cc)
		}
	}
	c.mu.Unlock()

	for _, cc := range live {
		cc.fail(ErrClosed)
	}
	c.wg.Wait()
	return nil
}

func (cc *clientConn) connErr(err error) error {
	return fmt.Errorf("%w: %s: %w", ErrConnection, cc.addr, err)
}

// register allocates a request ID and its response channel.
func (cc *clientConn) register() (uint64, chan result, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil {
		return 0, nil, cc.err
	}
	cc.nextID++
	ch := make(chan result, 1)
	cc.pending[cc.nextID] = ch
	return cc.nextID, ch, nil
}

// forget drops an abandoned request; its response, if any, is discarded.
func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	delete(cc.pending, id)
	cc.mu.Unlock()
}

func (cc *clientConn) roundTrip(ctx context.Context, id uint64, ch chan result, frame []byte) ([]byte, error) {
	select {
	case cc.fc.sendq <- frame:
	case <-cc.fc.done: // fail has delivered (or will deliver) the error on ch
	case <-ctx.Done():
		cc.forget(id)
		return nil, fmt.Errorf("mux: call %s: %w", cc.addr, ctx.Err())
	}
	select {
	case r := <-ch:
		return r.payload, r.err
	case <-ctx.Done():
		cc.forget(id)
		return nil, fmt.Errorf("mux: call %s: %w", cc.addr, ctx.Err())
	}
}

// readLoop dispatches responses to their callers until the connection fails
// or has been idle for idle (0: never).
func (cc *clientConn) readLoop(idle, frame time.Duration) {
	defer cc.c.wg.Done()
	for {
		id, status, payload, err := cc.fc.nextFrame(idle, frame, func() bool { return !cc.retireIfIdle() })
		if errors.Is(err, errIdle) {
			return // retired
		}
		if err != nil {
			cc.fail(cc.connErr(err))
			return
		}
		var r result
		switch status {
		case statusOK:
			r.payload = payload
		case statusError:
			r.err = &RemoteError{Msg: string(payload)}
		default:
			cc.fail(cc.connErr(fmt.Errorf("%w: response status %d", errMalformedFrame, status)))
			return
		}
		cc.mu.Lock()
		ch := cc.pending[id]
		delete(cc.pending, id)
		cc.mu.Unlock()
		if ch != nil {
			ch <- r // buffered; never blocks
		}
	}
}

// retireIfIdle closes cc if no call is in flight on it and reports whether
// it did. Atomically with that check it removes cc from the Client, so a
// Call that still picks cc fails to register on it (before sending
// anything) and its retry dials a fresh connection.
func (cc *clientConn) retireIfIdle() bool {
	c := cc.c
	c.mu.Lock()
	cc.mu.Lock()
	if len(cc.pending) > 0 || cc.err != nil {
		cc.mu.Unlock()
		c.mu.Unlock()
		return false
	}
	cc.err = cc.connErr(errIdle)
	cc.pending = nil
	if c.conns[cc.addr] == cc {
		delete(c.conns, cc.addr)
	}
	cc.mu.Unlock()
	c.mu.Unlock()
	cc.fc.shutdown()
	return true
}

// fail marks cc broken, removes it from the Client so the next Call redials,
// closes it and fails its in-flight calls with err. Only the first call has
// an effect.
func (cc *clientConn) fail(err error) {
	c := cc.c
	c.mu.Lock()
	if c.conns[cc.addr] == cc {
		delete(c.conns, cc.addr)
	}
	c.mu.Unlock()

	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	pending := cc.pending
	cc.pending = nil
	cc.mu.Unlock()

	cc.fc.shutdown()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}
