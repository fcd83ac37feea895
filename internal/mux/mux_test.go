package mux

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

const (
	svcA   byte = 1
	svcB   byte = 2
	svcRPC byte = 3
)

// checkGoroutines records the goroutine count and, at cleanup (registered
// first, so it runs after every other cleanup), polls until it is back to
// that baseline.
func checkGoroutines(t testing.TB) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// newMux returns an unstarted Mux on 127.0.0.1:0, closed at cleanup.
func newMux(t testing.TB, dial Dialer) *Mux {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := New(ln, dial)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// serve runs serveFn in a goroutine; at cleanup it calls closeFn and
// requires serveFn to return nil.
func serve(t testing.TB, serveFn, closeFn func() error) {
	errc := make(chan error, 1)
	go func() { errc <- serveFn() }()
	t.Cleanup(func() {
		require.NoError(t, closeFn())
		select {
		case err := <-errc:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
}

type acceptResult struct {
	conn net.Conn
	err  error
}

// acceptWithin accepts one connection from ln or fails the test after d.
func acceptWithin(t *testing.T, ln net.Listener, d time.Duration) net.Conn {
	t.Helper()
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := ln.Accept()
		ch <- acceptResult{c, err}
	}()
	select {
	case r := <-ch:
		require.NoError(t, r.err)
		t.Cleanup(func() { r.conn.Close() })
		return r.conn
	case <-time.After(d):
		t.Fatal("accept timed out")
		return nil
	}
}

// requireClosedByPeer asserts that the peer closes conn.
func requireClosedByPeer(t *testing.T, conn net.Conn) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := conn.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
}

func TestMuxRoutesServices(t *testing.T) {
	checkGoroutines(t)
	m := newMux(t, nil)
	la, lb := m.Listen(svcA), m.Listen(svcB)
	require.Equal(t, m.Addr(), la.Addr())
	require.Panics(t, func() { m.Listen(svcA) })
	serve(t, m.Serve, m.Close)

	ctx := context.Background()
	addr := m.Addr().String()
	for i := range 10 {
		svc := []byte{svcA, svcB}[i%2]
		c, err := m.Dial(ctx, svc, addr)
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write([]byte{'0' + svc})
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		ln   net.Listener
		want byte
	}{{la, '0' + svcA}, {lb, '0' + svcB}} {
		for range 5 {
			c := acceptWithin(t, tc.ln, 5*time.Second)
			buf := make([]byte, 1)
			_, err := io.ReadFull(c, buf)
			require.NoError(t, err)
			require.Equal(t, tc.want, buf[0], "connection routed to the wrong service")
		}
	}
}

func TestMuxDropsUnknownAndSlowClients(t *testing.T) {
	checkGoroutines(t)
	m := newMux(t, nil)
	m.SetLimits(Limits{HeaderTimeout: 200 * time.Millisecond})
	la := m.Listen(svcA)
	serve(t, m.Serve, m.Close)
	addr := m.Addr().String()

	// A silent client must not block other connections.
	silent, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer silent.Close()

	unknown, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer unknown.Close()
	_, err = unknown.Write([]byte{0x7f})
	require.NoError(t, err)

	c, err := m.Dial(context.Background(), svcA, addr)
	require.NoError(t, err)
	defer c.Close()
	acceptWithin(t, la, 5*time.Second)

	requireClosedByPeer(t, unknown)
	requireClosedByPeer(t, silent) // after the header timeout
}

func TestServiceListenerClose(t *testing.T) {
	checkGoroutines(t)
	m := newMux(t, nil)
	la, lb := m.Listen(svcA), m.Listen(svcB)
	serve(t, m.Serve, m.Close)
	addr := m.Addr().String()

	require.NoError(t, la.Close())
	require.NoError(t, la.Close())
	_, err := la.Accept()
	require.ErrorIs(t, err, net.ErrClosed)

	c, err := m.Dial(context.Background(), svcA, addr)
	require.NoError(t, err)
	defer c.Close()
	requireClosedByPeer(t, c)

	c2, err := m.Dial(context.Background(), svcB, addr)
	require.NoError(t, err)
	defer c2.Close()
	acceptWithin(t, lb, 5*time.Second)

	// The service can be registered again.
	la2 := m.Listen(svcA)
	c3, err := m.Dial(context.Background(), svcA, addr)
	require.NoError(t, err)
	defer c3.Close()
	acceptWithin(t, la2, 5*time.Second)
}

func TestMuxClose(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m := New(ln, nil)
	la := m.Listen(svcA)
	errc := make(chan error, 1)
	go func() { errc <- m.Serve() }()

	accepted := make(chan error, 1)
	go func() {
		_, err := la.Accept()
		accepted <- err
	}()
	// A connection stuck before its header is dropped by Close. Wait until
	// Serve has accepted it: one still in the kernel's accept queue when
	// the listener closes is reset instead (ECONNRESET, not EOF).
	silent, err := net.Dial("tcp", m.Addr().String())
	require.NoError(t, err)
	defer silent.Close()
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.pending) == 1
	}, 10*time.Second, time.Millisecond, "the mux to accept the silent connection")

	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	require.NoError(t, <-errc)
	require.ErrorIs(t, <-accepted, net.ErrClosed)
	_, err = m.Listen(svcB).Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	requireClosedByPeer(t, silent)
	require.NoError(t, m.Serve()) // Serve after Close returns at once
}

// TestRaftTransport runs two raft groups (two service bytes) between two
// muxes and checks each AppendEntries reaches the right group's transport.
func TestRaftTransport(t *testing.T) {
	checkGoroutines(t)
	m1, m2 := newMux(t, nil), newMux(t, nil)
	var trans [2][2]*raft.NetworkTransport
	for i, m := range []*Mux{m1, m2} {
		for g, svc := range []byte{svcA, svcB} {
			tr := raft.NewNetworkTransport(m.StreamLayer(svc), 2, 5*time.Second, io.Discard)
			t.Cleanup(func() { tr.CloseStreams(); tr.Close() }) // CloseStreams drops pooled conns
			trans[i][g] = tr
		}
		serve(t, m.Serve, m.Close)
	}
	require.Equal(t, raft.ServerAddress(m2.Addr().String()), trans[1][0].LocalAddr())

	for g := range 2 {
		src, dst := trans[0][g], trans[1][g]
		wantTerm := uint64(100 + g)
		go func() {
			rpc := <-dst.Consumer()
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true, LastLog: 7}, nil)
		}()
		args := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{Addr: src.EncodePeer("n1", src.LocalAddr())},
			Term:      wantTerm,
			Entries:   []*raft.Log{{Index: 1, Term: wantTerm, Type: raft.LogCommand, Data: []byte("x")}},
		}
		var resp raft.AppendEntriesResponse
		require.NoError(t, src.AppendEntries("n2", dst.LocalAddr(), args, &resp))
		require.True(t, resp.Success)
		require.Equal(t, wantTerm, resp.Term, "RPC reached the wrong raft group")
		require.EqualValues(t, 7, resp.LastLog)
	}
}

type countFSM struct{ n atomic.Int64 }

func (f *countFSM) Apply(*raft.Log) any                 { return f.n.Add(1) }
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("unsupported") }
func (f *countFSM) Restore(io.ReadCloser) error         { return errors.New("unsupported") }

// TestRaftCluster forms a two-node raft cluster over muxes: the election and
// replication both need raft traffic to flow through the mux.
func TestRaftCluster(t *testing.T) {
	checkGoroutines(t)
	var (
		rafts []*raft.Raft
		fsms  []*countFSM
		conf  raft.Configuration
	)
	muxes := []*Mux{newMux(t, nil), newMux(t, nil)}
	for i, m := range muxes {
		conf.Servers = append(conf.Servers, raft.Server{
			ID: raft.ServerID(fmt.Sprint("n", i)), Address: raft.ServerAddress(m.Addr().String()),
		})
	}
	for i, m := range muxes {
		tr := raft.NewNetworkTransport(m.StreamLayer(svcA), 3, 2*time.Second, io.Discard)
		serve(t, m.Serve, m.Close)
		cfg := raft.DefaultConfig()
		cfg.LocalID = conf.Servers[i].ID
		cfg.LogOutput = io.Discard
		cfg.HeartbeatTimeout = 100 * time.Millisecond
		cfg.ElectionTimeout = 100 * time.Millisecond
		cfg.LeaderLeaseTimeout = 50 * time.Millisecond
		store := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		require.NoError(t, raft.BootstrapCluster(cfg, store, store, snaps, tr, conf))
		fsm := &countFSM{}
		r, err := raft.NewRaft(cfg, fsm, store, store, snaps, tr)
		require.NoError(t, err)
		t.Cleanup(func() {
			require.NoError(t, r.Shutdown().Error())
			tr.CloseStreams()
			tr.Close()
		})
		rafts, fsms = append(rafts, r), append(fsms, fsm)
	}

	var leader *raft.Raft
	require.Eventually(t, func() bool {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	for range 3 {
		require.NoError(t, leader.Apply([]byte("x"), 5*time.Second).Error())
	}
	// Commit needs the follower's ack; the follower applies soon after.
	require.Eventually(t, func() bool {
		return fsms[0].n.Load() == 3 && fsms[1].n.Load() == 3
	}, 10*time.Second, 10*time.Millisecond)
}

// rpcNode is a Mux with an RPC Server on svcRPC.
type rpcNode struct {
	mux     *Mux
	srv     *Server
	addr    string
	started chan struct{} // receives when a blocking handler has started
	release chan struct{} // closed to release blocking handlers
}

const (
	mEcho byte = iota
	mFail
	mBlock     // blocks until release or ctx done
	mBlockCtx  // blocks until ctx done
	mBigResult // returns an oversized response
)

func newRPCNode(t testing.TB) *rpcNode {
	n := &rpcNode{mux: newMux(t, nil), started: make(chan struct{}, 16), release: make(chan struct{})}
	n.addr = n.mux.Addr().String()
	n.srv = NewServer(n.mux.Listen(svcRPC), func(ctx context.Context, method byte, p []byte) ([]byte, error) {
		switch method {
		case mEcho:
			return append([]byte("echo:"), p...), nil
		case mFail:
			return nil, errors.New("boom: " + string(p))
		case mBlock:
			n.started <- struct{}{}
			select {
			case <-n.release:
				return []byte("released"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case mBlockCtx:
			n.started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		case mBigResult:
			return make([]byte, maxPayload+1), nil
		}
		return nil, fmt.Errorf("unknown method %d", method)
	})
	serve(t, n.mux.Serve, n.mux.Close)
	serve(t, n.srv.Serve, n.srv.Close) // cleanups run LIFO: server first
	return n
}

func newClient(t testing.TB, m *Mux) *Client {
	c := NewClient(m, svcRPC)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func waitStarted(t *testing.T, n *rpcNode) {
	t.Helper()
	select {
	case <-n.started:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not start")
	}
}

func TestRPCConcurrentCalls(t *testing.T) {
	checkGoroutines(t)
	srv := newRPCNode(t)
	c := newClient(t, newMux(t, nil))
	ctx := context.Background()

	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			for j := range 5 {
				msg := fmt.Sprintf("%d-%d", i, j)
				resp, err := c.Call(ctx, srv.addr, mEcho, []byte(msg))
				if err != nil || string(resp) != "echo:"+msg {
					t.Errorf("call %s: got %q, %v", msg, resp, err)
				}
			}
		})
	}
	wg.Wait()

	resp, err := c.Call(ctx, srv.addr, mEcho, nil)
	require.NoError(t, err)
	require.Equal(t, "echo:", string(resp))
}

func TestRPCRemoteError(t *testing.T) {
	checkGoroutines(t)
	srv := newRPCNode(t)
	c := newClient(t, newMux(t, nil))

	_, err := c.Call(context.Background(), srv.addr, mFail, []byte("x"))
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "boom: x", re.Msg)
	require.Equal(t, "mux: remote: boom: x", err.Error())
	require.NotErrorIs(t, err, ErrConnection)

	_, err = c.Call(context.Background(), srv.addr, mBigResult, nil)
	require.ErrorAs(t, err, &re)

	// Oversized requests are refused locally; the connection stays usable.
	_, err = c.Call(context.Background(), srv.addr, mEcho, make([]byte, maxPayload+1))
	require.ErrorIs(t, err, errFrameTooLarge)
	_, err = c.Call(context.Background(), srv.addr, mEcho, []byte("ok"))
	require.NoError(t, err)
}

func TestRPCContextTimeout(t *testing.T) {
	checkGoroutines(t)
	srv := newRPCNode(t)
	c := newClient(t, newMux(t, nil))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Call(ctx, srv.addr, mBlock, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
	<-srv.started

	// The late response is discarded and the connection keeps working.
	close(srv.release)
	resp, err := c.Call(context.Background(), srv.addr, mEcho, []byte("a"))
	require.NoError(t, err)
	require.Equal(t, "echo:a", string(resp))

	// An already cancelled context fails fast.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	_, err = c.Call(cctx, srv.addr, mEcho, nil)
	require.ErrorIs(t, err, context.Canceled)
}

// trackingDialer records dialed connections so tests can break them.
type trackingDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *trackingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *trackingDialer) last() (net.Conn, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[len(d.conns)-1], len(d.conns)
}

func TestRPCBrokenConnectionRedials(t *testing.T) {
	checkGoroutines(t)
	srv := newRPCNode(t)
	var td trackingDialer
	c := newClient(t, newMux(t, td.dial))
	ctx := context.Background()

	_, err := c.Call(ctx, srv.addr, mEcho, nil)
	require.NoError(t, err)

	const inflight = 3
	errs := make(chan error, inflight)
	for range inflight {
		go func() {
			_, err := c.Call(ctx, srv.addr, mBlock, nil)
			errs <- err
		}()
	}
	for range inflight {
		waitStarted(t, srv)
	}
	conn, n := td.last()
	require.Equal(t, 1, n)
	require.NoError(t, conn.Close())
	for range inflight {
		err := <-errs
		require.ErrorIs(t, err, ErrConnection)
	}

	resp, err := c.Call(ctx, srv.addr, mEcho, []byte("again"))
	require.NoError(t, err)
	require.Equal(t, "echo:again", string(resp))
	_, n = td.last()
	require.Equal(t, 2, n, "expected exactly one redial")
}

func TestRPCServerDown(t *testing.T) {
	checkGoroutines(t)
	srv := newRPCNode(t)
	c := newClient(t, newMux(t, nil))
	ctx := context.Background()

	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, srv.addr, mBlockCtx, nil)
		errc <- err
	}()
	waitStarted(t, srv)
	require.NoError(t, srv.srv.Close()) // cancels the handler and drops the conn
	require.NoError(t, srv.srv.Close())
	require.ErrorIs(t, <-errc, ErrConnection)

	require.NoError(t, srv.mux.Close())
	_, err := c.Call(ctx, srv.addr, mEcho, nil)
	require.ErrorIs(t, err, ErrConnection) // dial refused

	srv2 := newRPCNode(t)
	resp, err := c.Call(ctx, srv2.addr, mEcho, []byte("b"))
	require.NoError(t, err)
	require.Equal(t, "echo:b", string(resp))
}

func TestClientClose(t *testing.T) {
	checkGoroutines(t)
	srv := newRPCNode(t)
	c := NewClient(newMux(t, nil), svcRPC)

	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), srv.addr, mBlockCtx, nil)
		errc <- err
	}()
	waitStarted(t, srv)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	require.ErrorIs(t, <-errc, ErrClosed)
	_, err := c.Call(context.Background(), srv.addr, mEcho, nil)
	require.ErrorIs(t, err, ErrClosed)
}

func TestClientCloseDuringDial(t *testing.T) {
	checkGoroutines(t)
	dialing := make(chan struct{})
	m := newMux(t, func(ctx context.Context, addr string) (net.Conn, error) {
		close(dialing)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	c := NewClient(m, svcRPC)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "127.0.0.1:1", mEcho, nil)
		errc <- err
	}()
	<-dialing
	require.NoError(t, c.Close())
	require.ErrorIs(t, <-errc, ErrClosed)
}

func TestReadFrameErrors(t *testing.T) {
	read := func(b []byte) error {
		_, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
		return err
	}
	require.ErrorIs(t, read(nil), io.EOF)
	require.ErrorIs(t, read([]byte{0, 0}), io.ErrUnexpectedEOF)
	require.ErrorIs(t, read(appendFrame(nil, 1, 0, nil)[:12]), io.ErrUnexpectedEOF)
	require.ErrorIs(t, read(appendFrame(nil, 1, 0, []byte("abc"))[:14]), io.ErrUnexpectedEOF)
	require.ErrorIs(t, read([]byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0}), errMalformedFrame)
	require.ErrorIs(t, read([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0}), errFrameTooLarge)

	big := bytes.Repeat([]byte("z"), 3*readChunk+5) // exercises buffer growth
	id, kind, p, err := readFrame(bufio.NewReader(bytes.NewReader(appendFrame(nil, 42, 7, big))))
	require.NoError(t, err)
	require.Equal(t, uint64(42), id)
	require.Equal(t, byte(7), kind)
	require.Equal(t, big, p)
	require.Equal(t, len(big), cap(p))
}

func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, 1, 2, []byte("hello")))
	f.Add(append(appendFrame(nil, 1, 0, nil), appendFrame(nil, 1<<40, 1, []byte("x"))...))
	f.Add([]byte{0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3}) // ~64 MiB declared, 3 bytes sent
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		br := bufio.NewReader(bytes.NewReader(data))
		var reencoded []byte
		for {
			id, kind, payload, err := readFrame(br)
			if err != nil {
				break
			}
			if len(payload) > maxPayload {
				t.Fatalf("payload of %d bytes exceeds limit", len(payload))
			}
			reencoded = appendFrame(reencoded, id, kind, payload)
		}
		runtime.ReadMemStats(&after)
		// Decoded frames are a prefix of the input.
		if !bytes.HasPrefix(data, reencoded) {
			t.Fatalf("re-encoded frames are not a prefix of the input")
		}
		// Allocation tracks the input, not declared lengths: the reader
		// (4 KiB), at most one readChunk, and geometric growth over the
		// data, plus slack for the runtime.
		limit := uint64(4*len(data) + readChunk + 4096 + 64<<10)
		if got := after.TotalAlloc - before.TotalAlloc; got > limit {
			t.Fatalf("allocated %d bytes for %d input bytes", got, len(data))
		}
	})
}

func BenchmarkCall(b *testing.B) {
	srv := newRPCNode(b)
	c := newClient(b, newMux(b, nil))
	payload := []byte(strings.Repeat("p", 200))
	ctx := context.Background()
	_, err := c.Call(ctx, srv.addr, mEcho, payload)
	require.NoError(b, err)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8) // 8 callers per P: exercises pipelining and batched flushes
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Call(ctx, srv.addr, mEcho, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
