// Package mux multiplexes several services over one TCP listener, so that a
// node can expose its hashicorp/raft groups and its node-to-node RPCs on a
// single cluster address.
//
// # Connection routing
//
// Every new connection starts with one header byte naming the service it is
// for. A [Mux] accepts connections from the underlying listener, reads that
// byte (with a deadline, in a goroutine per connection so a slow or silent
// client never holds up the accept loop) and hands the connection, with the
// header byte consumed, to the [net.Listener] returned by [Mux.Listen] for
// that service. Connections naming an unregistered service are closed, and
// so are connections beyond the limits on open connections, in total and
// per remote IP address, at once and before any goroutine is started for
// them (see [Limits]).
// [Mux.Dial] is the client side: it dials and writes the header byte.
// [Mux.StreamLayer] adapts one service to raft.StreamLayer so that
// raft.NewNetworkTransport can run over the mux.
//
// # RPC
//
// [Server] and [Client] implement a small multiplexed request/response
// protocol over one service. A Client keeps a single connection per remote
// address and pipelines concurrent calls over it; a Server runs every request
// in its own goroutine and may answer out of order. All integers are big
// endian. A request frame is
//
//	uint32 length | uint64 request ID | method byte | payload
//
// and a response frame is
//
//	uint32 length | uint64 request ID | status byte | payload
//
// where length counts the bytes after the length field (so it is at least 9
// and at most [MaxFrameSize]), the request ID echoes the request's, and status
// is 0 (payload is the handler's response) or 1 (payload is the handler's
// error text, surfaced to the caller as a [*RemoteError]). A peer that sends a
// malformed or oversized frame has its connection closed, before anything is
// allocated for an oversized one; so has a peer whose frame, once started,
// takes longer than [Limits.FrameTimeout] to arrive, or that sends nothing for
// [Limits.IdleTimeout] while it has no request in flight.
package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/backoff"
)

// Dialer opens a raw connection to addr. It must honour ctx's deadline and
// cancellation. A nil Dialer means a net.Dialer whose timeout is taken from
// ctx.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// Mux owns a net.Listener; every accepted connection's first byte names its
// service. All methods are safe for concurrent use.
type Mux struct {
	ln   net.Listener
	dial Dialer

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // routing goroutines

	mu       sync.Mutex
	closed   bool
	services map[byte]*serviceListener
	pending  map[net.Conn]struct{} // accepted, header not read yet
	limits   Limits                // with defaults applied
	open     int                   // accepted connections not yet closed
	perIP    map[string]int        // open, by remote IP
	stats    Stats
}

// New returns a Mux serving ln with the default [Limits]. It does no I/O and
// starts no goroutines; call Listen for each service and then Serve. A nil
// dial uses a net.Dialer. A Mux with a nil ln only dials (a client's):
// it must not Serve, and its Close only stops it.
func New(ln net.Listener, dial Dialer) *Mux {
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return &Mux{
		ln:       ln,
		dial:     dial,
		done:     make(chan struct{}),
		services: make(map[byte]*serviceListener),
		pending:  make(map[net.Conn]struct{}),
		limits:   Limits{}.withDefaults(),
		perIP:    make(map[string]int),
	}
}

// Listen registers service and returns the listener its connections are
// delivered on. Register services before calling Serve; connections for a
// service that is not (yet) registered are dropped. Listen panics if service
// is already registered. The listener's Addr is the mux's address, its Accept
// returns connections whose header byte has been consumed, and its Close only
// unregisters the service (which may then be registered again). After the Mux
// is closed, Listen returns an already closed listener.
func (m *Mux) Listen(service byte) net.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.services[service]; ok {
		panic(fmt.Sprintf("mux: service %d registered twice", service))
	}
	l := &serviceListener{m: m, service: service, conns: make(chan net.Conn), done: make(chan struct{})}
	if m.closed {
		l.stop()
	} else {
		m.services[service] = l
	}
	return l
}

// Serve accepts connections until the Mux is closed, routing each to its
// service. It returns nil after Close, or the listener's error if the
// listener was closed by someone else. Transient accept errors are retried
// with backoff.
func (m *Mux) Serve() error {
	return acceptLoop(m.ln, m.done, func(conn net.Conn) {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			conn.Close()
			return
		}
		counted := m.admitLocked(conn)
		if counted == nil {
			m.mu.Unlock()
			conn.Close()
			return
		}
		m.pending[counted] = struct{}{}
		timeout := m.limits.HeaderTimeout
		m.wg.Add(1)
		m.mu.Unlock()
		go m.route(counted, timeout)
	})
}

// route reads conn's header byte, waiting at most timeout (0: forever), and
// hands conn to its service.
func (m *Mux) route(conn net.Conn, timeout time.Duration) {
	defer m.wg.Done()
	var hdr [1]byte
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	err := conn.SetReadDeadline(deadline)
	if err == nil {
		_, err = io.ReadFull(conn, hdr[:])
	}
	if err == nil {
		err = conn.SetReadDeadline(time.Time{})
	}
	m.mu.Lock()
	delete(m.pending, conn)
	l := m.services[hdr[0]]
	if err != nil || l == nil {
		m.stats.Dropped++
	}
	m.mu.Unlock()
	if err != nil || l == nil {
		conn.Close()
		return
	}
	select {
	case l.conns <- conn:
	case <-l.done:
		conn.Close()
	case <-m.done:
		conn.Close()
	}
}

// Close closes the underlying listener and every service listener (their
// Accept returns net.ErrClosed), drops connections still being routed and
// waits for the routing goroutines. Connections already handed to a service
// are owned by that service and left open. Close is idempotent; calls after
// the first return nil.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		close(m.done)
		services, pending := m.services, m.pending
		m.services, m.pending = map[byte]*serviceListener{}, map[net.Conn]struct{}{}
		m.mu.Unlock()

		if m.ln != nil {
			err = m.ln.Close()
		}
		for _, l := range services {
			l.stop()
		}
		for c := range pending {
			c.Close()
		}
		m.wg.Wait()
	})
	return err
}

// Addr returns the underlying listener's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Dial connects to the Mux at addr using the Dialer and announces service by
// writing its header byte. If ctx has a deadline it also bounds that write.
func (m *Mux) Dial(ctx context.Context, service byte, addr string) (net.Conn, error) {
	conn, err := m.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		err = conn.SetWriteDeadline(deadline)
	}
	if err == nil {
		_, err = conn.Write([]byte{service})
	}
	if err == nil && hasDeadline {
		err = conn.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// serviceListener is the net.Listener of one registered service.
type serviceListener struct {
	m       *Mux
	service byte
	conns   chan net.Conn // unbuffered: a successful send is a completed Accept
	done    chan struct{}
	once    sync.Once
}

func (l *serviceListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close unregisters the service; the Mux and other services keep running.
func (l *serviceListener) Close() error {
	l.m.mu.Lock()
	if l.m.services[l.service] == l {
		delete(l.m.services, l.service)
	}
	l.m.mu.Unlock()
	l.stop()
	return nil
}

func (l *serviceListener) stop() { l.once.Do(func() { close(l.done) }) }

func (l *serviceListener) Addr() net.Addr { return l.m.Addr() }

// limits lets a Server serving this listener apply the Mux's limits.
func (l *serviceListener) limits() Limits { return l.m.currentLimits() }

// StreamLayer registers service (see Listen) and returns it as a
// raft.StreamLayer, for use with raft.NewNetworkTransport. Its Dial connects
// to the same service on the remote Mux.
func (m *Mux) StreamLayer(service byte) raft.StreamLayer {
	return &streamLayer{Listener: m.Listen(service), m: m, service: service}
}

type streamLayer struct {
	net.Listener
	m       *Mux
	service byte
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return s.m.Dial(ctx, s.service, string(address))
}

// acceptLoop passes every connection accepted from ln to handle until done
// is closed (then it returns nil) or ln reports net.ErrClosed without done
// being closed (then it returns that error). Other accept errors, such as
// running out of file descriptors, are retried with capped backoff.
func acceptLoop(ln net.Listener, done <-chan struct{}, handle func(net.Conn)) error {
	retry := backoff.Backoff{Policy: backoff.Policy{Initial: 5 * time.Millisecond, Max: time.Second}}
	for {
		conn, err := ln.Accept()
		if err == nil {
			retry.Reset()
			handle(conn)
			continue
		}
		select {
		case <-done:
			return nil
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		select {
		case <-done:
			return nil
		case <-retry.After():
		}
	}
}
