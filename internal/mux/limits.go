package mux

import (
	"net"
	"sync"
	"time"
)

// Defaults of [Limits].
const (
	DefaultHeaderTimeout = 5 * time.Second
	DefaultMaxConns      = 1024
	DefaultMaxConnsPerIP = 256
	DefaultIdleTimeout   = 2 * time.Minute
	DefaultFrameTimeout  = 30 * time.Second
)

// Limits bound what anyone who can reach a Mux's address can make it, and
// the RPC Servers behind it, hold: connections, goroutines and buffers. In
// every field zero means the default and a negative value means no limit.
//
// What bounds each kind of connection:
//
//   - Before its service byte: HeaderTimeout, then it is closed.
//   - RPC (Server): MaxFrameSize is checked before anything is allocated,
//     and a payload's buffer grows only as its bytes arrive; FrameTimeout
//     once a frame has started; IdleTimeout while it has no request in
//     flight; the connection counts.
//   - Any other service, such as a raft group's stream: only the
//     connection counts. hashicorp/raft's NetworkTransport sets no read
//     deadline on the connections it accepts (a pooled connection may
//     legitimately wait a long time for its next request) and allocates
//     a 256 KiB read buffer for each, so MaxConns times that is the bound
//     on the memory silent raft streams can hold.
type Limits struct {
	// HeaderTimeout bounds how long an accepted connection may take to
	// send its service byte (default 5 s).
	HeaderTimeout time.Duration
	// MaxConns bounds the accepted connections open at once, all services
	// together (default 1,024). An excess connection is closed as soon as
	// it is accepted and counted in Stats.RefusedMaxConns.
	MaxConns int
	// MaxConnsPerIP bounds the accepted connections open at once from one
	// remote IP address (default 256). Nodes sharing an address share
	// this limit; every peer holds a few connections per raft group. An
	// excess connection is closed at once and counted in
	// Stats.RefusedPerIP.
	MaxConnsPerIP int
	// IdleTimeout is how long an RPC Server keeps a connection that has no
	// request in flight and sends nothing (default 2 min). A Client closes
	// its own connections after half of it, so that a Call never races
	// the server's close; peers must therefore share the same setting (or
	// the server's must be the longer).
	IdleTimeout time.Duration
	// FrameTimeout bounds how long an RPC frame may take to arrive once
	// its first byte has (default 30 s): a stalled half frame breaks the
	// connection. It must allow the largest frame at the slowest link's
	// rate (8 MiB, raftlog's default batch limit, needs 280 KiB/s).
	FrameTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0
		}
	}
	defInt := func(v *int, d int) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0
		}
	}
	def(&l.HeaderTimeout, DefaultHeaderTimeout)
	defInt(&l.MaxConns, DefaultMaxConns)
	defInt(&l.MaxConnsPerIP, DefaultMaxConnsPerIP)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	def(&l.FrameTimeout, DefaultFrameTimeout)
	return l
}

// Stats counts a Mux's connections.
type Stats struct {
	Conns           int    // accepted connections open now
	Accepted        uint64 // connections admitted since New
	RefusedMaxConns uint64 // closed at once: MaxConns were open
	RefusedPerIP    uint64 // closed at once: MaxConnsPerIP were open from its address
	Dropped         uint64 // closed without a known service byte within HeaderTimeout
}

// SetLimits replaces the Mux's limits (see [Limits]; the zero value means
// every default). Call it before Serve: connections already accepted keep
// the limits they were accepted under.
func (m *Mux) SetLimits(l Limits) {
	m.mu.Lock()
	m.limits = l.withDefaults()
	m.mu.Unlock()
}

// Stats returns the Mux's connection counts.
func (m *Mux) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Conns = m.open
	return s
}

func (m *Mux) currentLimits() Limits {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limits
}

// admitLocked counts conn against the limits and returns it wrapped so that
// closing it releases its place, or returns nil if a limit is reached.
func (m *Mux) admitLocked(conn net.Conn) net.Conn {
	ip := remoteIP(conn)
	switch {
	case m.limits.MaxConns > 0 && m.open >= m.limits.MaxConns:
		m.stats.RefusedMaxConns++
		return nil
	case m.limits.MaxConnsPerIP > 0 && m.perIP[ip] >= m.limits.MaxConnsPerIP:
		m.stats.RefusedPerIP++
		return nil
	}
	m.open++
	m.perIP[ip]++
	m.stats.Accepted++
	return &countedConn{Conn: conn, m: m, ip: ip}
}

func (m *Mux) release(ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open--
	if m.perIP[ip]--; m.perIP[ip] <= 0 {
		delete(m.perIP, ip)
	}
}

// remoteIP is the address conn's limit per IP is counted under.
func remoteIP(conn net.Conn) string {
	addr := conn.RemoteAddr()
	if addr == nil {
		return ""
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return host
	}
	return addr.String()
}

// countedConn holds one place under the Mux's connection limits until it is
// first closed.
type countedConn struct {
	net.Conn
	m    *Mux
	ip   string
	once sync.Once
}

// NetConn returns the connection it counts (as tls.Conn's NetConn does),
// so PeerOf finds a TLS peer's certificates through it.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.m.release(c.ip) })
	return err
}
