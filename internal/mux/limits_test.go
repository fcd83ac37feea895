package mux

import (
	"context"
	"encoding/binary"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// dialFrom opens a raw TCP connection to addr from the loopback address
// local (any 127.0.0.0/8 address works on Linux), closed at cleanup.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func waitStats(t *testing.T, m *Mux, what string, ok func(Stats) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return ok(m.Stats()) }, 10*time.Second, time.Millisecond,
		"%s (stats %+v)", what, m.Stats())
}

// requireClosedWithin asserts that the peer closes conn within d.
func requireClosedWithin(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	start := time.Now()
	requireClosedByPeer(t, conn)
	require.Less(t, time.Since(start), d, "closed too late")
}

func TestMuxConnectionLimits(t *testing.T) {
	checkGoroutines(t)
	m := newMux(t, nil)
	m.SetLimits(Limits{MaxConns: 4, MaxConnsPerIP: 2})
	la := m.Listen(svcA)
	serve(t, m.Serve, m.Close)
	addr := m.Addr().String()

	// Two silent connections from 127.0.0.1 fill its share; the third is
	// closed at once, long before the header timeout.
	a1 := dialFrom(t, "127.0.0.1", addr)
	dialFrom(t, "127.0.0.1", addr)
	waitStats(t, m, "two connections open", func(s Stats) bool { return s.Conns == 2 })
	requireClosedWithin(t, dialFrom(t, "127.0.0.1", addr), time.Second)
	require.EqualValues(t, 1, m.Stats().RefusedPerIP)

	// Other addresses have their own share, up to MaxConns in total.
	dialFrom(t, "127.0.0.2", addr)
	c := dialFrom(t, "127.0.0.2", addr)
	_, err := c.Write([]byte{svcA}) // handed to the service: still counted
	require.NoError(t, err)
	served := acceptWithin(t, la, 5*time.Second)
	waitStats(t, m, "four connections open", func(s Stats) bool { return s.Conns == 4 })
	requireClosedWithin(t, dialFrom(t, "127.0.0.3", addr), time.Second)
	require.EqualValues(t, 1, m.Stats().RefusedMaxConns)

	// Closing a connection, on either side, frees its place.
	require.NoError(t, a1.Close())
	waitStats(t, m, "the mux to notice the close", func(s Stats) bool { return s.Conns == 3 })
	require.NoError(t, served.Close())
	waitStats(t, m, "the service's close to count", func(s Stats) bool { return s.Conns == 2 })
	b, err := m.Dial(context.Background(), svcA, addr)
	require.NoError(t, err)
	defer b.Close()
	acceptWithin(t, la, 5*time.Second)
	s := m.Stats()
	require.Equal(t, 3, s.Conns)
	require.EqualValues(t, 5, s.Accepted)
}

// rawRPC opens a raw connection to n's RPC service, closed at cleanup.
func rawRPC(t *testing.T, n *rpcNode) net.Conn {
	t.Helper()
	c := dialFrom(t, "127.0.0.1", n.addr)
	_, err := c.Write([]byte{svcRPC})
	require.NoError(t, err)
	return c
}

func newLimitedRPCNode(t *testing.T, l Limits) *rpcNode {
	n := newRPCNode(t)
	n.mux.SetLimits(l) // before the first connection: Serve reads it per accept
	return n
}

func TestServerFrameLimits(t *testing.T) {
	checkGoroutines(t)
	srv := newLimitedRPCNode(t, Limits{FrameTimeout: 300 * time.Millisecond})
	c := newClient(t, newMux(t, nil))

	// Half a frame: the header promises 100 bytes, 10 arrive.
	half := rawRPC(t, srv)
	_, err := half.Write(appendFrame(nil, 1, mEcho, make([]byte, 100))[:23])
	require.NoError(t, err)

	// A 4 GiB length prefix: refused before anything is allocated for it.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	huge := rawRPC(t, srv)
	_, err = huge.Write(binary.BigEndian.AppendUint32(nil, 0xffffffff))
	require.NoError(t, err)
	_, err = huge.Write(make([]byte, 9))
	require.NoError(t, err)
	requireClosedWithin(t, huge, time.Second)
	runtime.ReadMemStats(&after)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "allocated for a 4 GiB announcement")

	// Other connections are served meanwhile.
	resp, err := c.Call(context.Background(), srv.addr, mEcho, []byte("x"))
	require.NoError(t, err)
	require.Equal(t, "echo:x", string(resp))

	requireClosedWithin(t, half, 5*time.Second)
}

func TestServerIdleTimeout(t *testing.T) {
	checkGoroutines(t)
	const idle = 300 * time.Millisecond
	srv := newLimitedRPCNode(t, Limits{IdleTimeout: idle})

	silent := rawRPC(t, srv)
	start := time.Now()
	requireClosedWithin(t, silent, 5*time.Second)
	require.GreaterOrEqual(t, time.Since(start), idle-50*time.Millisecond)

	// A connection waiting for a slow response is not idle. The client's
	// mux has no idle timeout, so only the server could close it.
	m := newMux(t, nil)
	m.SetLimits(Limits{IdleTimeout: -1})
	c := newClient(t, m)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), srv.addr, mBlock, nil)
		errc <- err
	}()
	waitStarted(t, srv)
	time.Sleep(3 * idle) // the thing under test is the passing of time
	close(srv.release)
	require.NoError(t, <-errc)
}

// TestClientOutlivesServerIdleTimeout calls at intervals around the idle
// timeout: the client retires idle connections before the server does, and
// no call fails.
func TestClientOutlivesServerIdleTimeout(t *testing.T) {
	checkGoroutines(t)
	const idle = 100 * time.Millisecond
	limits := Limits{IdleTimeout: idle}
	srv := newLimitedRPCNode(t, limits)
	var td trackingDialer
	m := newMux(t, td.dial)
	m.SetLimits(limits)
	c := newClient(t, m)

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 15 {
				// Pauses from 0 to 120 ms sweep across the client's 50 ms and
				// the server's 100 ms.
				time.Sleep(time.Duration((i*7+w*13)%13) * 10 * time.Millisecond)
				if _, err := c.Call(context.Background(), srv.addr, mEcho, nil); err != nil {
					t.Errorf("call %d/%d: %v", w, i, err)
				}
			}
		})
	}
	wg.Wait()
	_, dials := td.last()
	require.Greater(t, dials, 1, "idle connections were never retired")
	t.Logf("%d dials", dials)
}
