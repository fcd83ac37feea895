package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/systemtest/wait"
)

// floodStyles are the ways a connection can hold a place on the cluster
// port without doing any work (issue #15, (e)).
var floodStyles = []struct {
	name  string
	hello []byte // what the connection sends before falling silent
}{
	{"silent", nil}, // no service byte
	{"rpc-idle", []byte{serviceRPC}},
	// Half a frame: 1,000 bytes announced, 20 sent.
	{"rpc-half-frame", append(binary.BigEndian.AppendUint32([]byte{serviceRPC}, 1000), make([]byte, 20)...)},
	{"rpc-4GiB", append(binary.BigEndian.AppendUint32([]byte{serviceRPC}, 0xffffffff), make([]byte, 9)...)},
	// A raft stream that never sends a command: raft reads it with no
	// deadline, holding its 256 KiB buffer until the connection closes.
	{"raft-silent", []byte{serviceShard}},
}

// flood opens n connections per style to addr from the loopback address
// local and sends each style's hello. The caller closes them.
func flood(t *testing.T, local, addr string, n int) map[string][]net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	out := map[string][]net.Conn{}
	for _, st := range floodStyles {
		for range n {
			c, err := d.Dial("tcp", addr)
			require.NoError(t, err)
			if len(st.hello) > 0 {
				_, err = c.Write(st.hello)
				require.NoError(t, err)
			}
			out[st.name] = append(out[st.name], c)
		}
	}
	return out
}

func closeAll(conns map[string][]net.Conn) {
	for _, cs := range conns {
		for _, c := range cs {
			c.Close()
		}
	}
}

// liveHeap is the heap in use after a collection, and the goroutine count.
func liveHeap() (heap uint64, goroutines int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

// appender appends one small record every interval through each of nodes
// in turn until stop is closed, and reports what it saw.
type appender struct {
	mu         sync.Mutex
	n          int
	errs       []error
	maxLatency time.Duration
}

func (a *appender) run(c *testCluster, nodes []int, interval time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		l := c.node(nodes[i%len(nodes)])
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		_, err := l.Append(ctx, fmt.Sprint("flood-", i%64), []NewRecord{{Value: []byte("v")}})
		took := time.Since(start)
		cancel()
		a.mu.Lock()
		a.n++
		a.maxLatency = max(a.maxLatency, took)
		if err != nil {
			a.errs = append(a.errs, err)
		}
		a.mu.Unlock()
	}
}

// warmUp appends through nodes for 2 s, so that the connections between
// the nodes are made and caches filled, and returns how many appends it
// made and the baseline heap and goroutine count after them.
func warmUp(t *testing.T, c *testCluster, nodes []int) (n int, heap uint64, goroutines int) {
	t.Helper()
	var warm appender
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { warm.run(c, nodes, 5*time.Millisecond, stop); close(done) }()
	time.Sleep(2 * time.Second) // a fixed amount of load, not a wait for a condition
	close(stop)
	<-done
	n, errs, _ := warm.report()
	require.Empty(t, errs)
	heap, goroutines = liveHeap()
	return n, heap, goroutines
}

// requireRecovered checks what a flood left: the appends made during it
// (stopped by the caller) all succeeded, more than 50 of them, none slower
// than 3 s; and the goroutine count and the live heap come back to within
// 10 % of the baseline.
func requireRecovered(t *testing.T, a *appender, baseHeap uint64, baseG int) {
	t.Helper()
	n, errs, maxLatency := a.report()
	t.Logf("appends during the flood: %d, max latency %v", n, maxLatency.Round(time.Millisecond))
	require.Empty(t, errs)
	require.Greater(t, n, 50)
	require.Less(t, maxLatency, 3*time.Second)
	var heap uint64
	var g int
	wait.Until(t, 30*time.Second, "goroutines and heap back to the baseline", func() bool {
		heap, g = liveHeap()
		return float64(g) <= 1.1*float64(baseG) && float64(heap) <= 1.1*float64(baseHeap)
	})
	t.Logf("after: %d goroutines (baseline %d), live heap %.1f MiB (baseline %.1f MiB)",
		g, baseG, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
}

func (a *appender) report() (int, []error, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n, a.errs, a.maxLatency
}

// TestClusterPortFlood opens 1,000 connections to the leader's cluster port
// that do nothing useful, 200 in each style of floodStyles, while appends go
// through the leader and through a follower (forwarded over the flooded
// port). Appends keep succeeding with bounded latency, a new node-to-node
// connection is served during the flood, a 4 GiB announcement is refused at
// once, and once the connections close the goroutine count and the live
// heap return to within 10 % of what they were before.
func TestClusterPortFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	const perStyle = 200
	// Every connection here comes from 127.0.0.1, peers' included: the
	// per-IP limit is raised so that this test measures the cost of what
	// it admits (TestClusterPortPerIPLimit tests the limit).
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.MaxConns = 4096
		cfg.MaxConnsPerIP = 4096
	})
	li := c.leader(0)
	fi := (li + 1) % 3
	target := c.node(li)
	addr := target.Addr()

	n, baseHeap, baseG := warmUp(t, c, []int{li, fi})
	baseConns := target.mux.Stats().Conns
	t.Logf("baseline: %d goroutines, live heap %.1f MiB, %d connections on the leader's port (%d warm-up appends)",
		baseG, float64(baseHeap)/(1<<20), baseConns, n)

	var a appender
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { a.run(c, []int{li, fi}, 20*time.Millisecond, stop); close(done) }()

	start := time.Now()
	conns := flood(t, "127.0.0.1", addr, perStyle)
	defer func() { closeAll(conns) }() // if the test fails with them open
	t.Logf("opened %d connections in %v", perStyle*len(floodStyles), time.Since(start).Round(time.Millisecond))
	wait.Until(t, 10*time.Second, "the leader to admit the flood", func() bool {
		s := target.mux.Stats()
		return s.Conns >= baseConns+(len(floodStyles)-1)*perStyle // the 4 GiB ones are gone
	})
	floodHeap, floodG := liveHeap()
	t.Logf("during the flood: %d goroutines, live heap %.1f MiB, stats %+v",
		floodG, float64(floodHeap)/(1<<20), target.mux.Stats())

	// Announcing 4 GiB gets a connection closed, not 4 GiB allocated.
	for _, conn := range conns["rpc-4GiB"] {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := conn.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF)
	}
	// A new node-to-node connection is accepted and served.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := mux.New(ln, nil)
	client := mux.NewClient(m, serviceRPC)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = client.Call(ctx, addr, 0xee, nil)
	cancel()
	require.NoError(t, client.Close())
	require.NoError(t, m.Close())
	var re *mux.RemoteError
	require.ErrorAs(t, err, &re, "a call on a new connection during the flood")

	time.Sleep(2 * time.Second) // appends run against the held flood for this long
	closeAll(conns)
	conns = nil // nor does the test hold on to them
	close(stop)
	<-done
	requireRecovered(t, &a, baseHeap, baseG)
	t.Logf("%d connections on the leader's port", target.mux.Stats().Conns)
	wait.Until(t, 10*time.Second, "the leader's connection count back to the baseline", func() bool {
		return target.mux.Stats().Conns <= baseConns
	})
}

// TestClusterPortPerIPLimit floods a follower from an address of its own,
// 127.0.0.2, past the per-IP limit: the excess is refused at once and
// counted, and the cluster, whose nodes connect from 127.0.0.1, keeps
// appending through that follower.
func TestClusterPortPerIPLimit(t *testing.T) {
	longTest(t)
	const limit = 64
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxConnsPerIP = limit })
	li := c.leader(0)
	fi := (li + 1) % 3
	target := c.node(fi)

	conns := flood(t, "127.0.0.2", target.Addr(), 40) // 200 connections
	defer closeAll(conns)
	wait.Until(t, 10*time.Second, "the excess to be refused", func() bool {
		return target.mux.Stats().RefusedPerIP >= 200-limit
	})
	s := target.mux.Stats()
	t.Logf("follower's port: %+v", s)
	require.EqualValues(t, 200-limit, s.RefusedPerIP)
	refused := 0
	for _, cs := range conns {
		for _, conn := range cs {
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
			// EOF, or a reset if the hello was still unread.
			_, err := conn.Read(make([]byte, 1))
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				refused++
			}
		}
	}
	require.GreaterOrEqual(t, refused, 200-limit, "refused connections are closed")

	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := target.Append(ctx, "k", []NewRecord{{Value: []byte(fmt.Sprint(i))}})
		cancel()
		require.NoError(t, err, "append %d through the flooded follower", i)
	}
}

// TestClusterPortFloodTLS is the flood on a mutual-TLS cluster: none of the
// 1,000 connections gets past the handshake. Garbage (the plaintext hellos
// of floodStyles) fails it at once and a silent connection is closed when
// the handshake's deadline passes; appends go on meanwhile, and goroutines
// and heap return to within 10 % of the baseline.
func TestClusterPortFloodTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	const perStyle = 200
	c, _ := newTLSCluster(t, 3, func(cfg *Config) {
		cfg.MaxConns = 4096
		cfg.MaxConnsPerIP = 4096
	})
	li := c.leader(0)
	fi := (li + 1) % 3
	target := c.node(li)

	_, baseHeap, baseG := warmUp(t, c, []int{li, fi})

	var a appender
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { a.run(c, []int{li, fi}, 20*time.Millisecond, stop); close(done) }()
	conns := flood(t, "127.0.0.1", target.Addr(), perStyle)
	defer func() { closeAll(conns) }()
	floodHeap, floodG := liveHeap()
	t.Logf("during the flood: %d goroutines (baseline %d), live heap %.1f MiB (baseline %.1f MiB)",
		floodG, baseG, float64(floodHeap)/(1<<20), float64(baseHeap)/(1<<20))

	// Every connection is closed by the server: garbage at once, silence
	// once the 5 s handshake deadline passes.
	for style, cs := range conns {
		for _, conn := range cs {
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(15*time.Second)))
			_, err := conn.Read(make([]byte, 1))
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: the server must close it", style)
			require.Error(t, err, style)
		}
	}
	closeAll(conns)
	conns = nil
	close(stop)
	<-done
	requireRecovered(t, &a, baseHeap, baseG)
}
