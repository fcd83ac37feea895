package eventstoretest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/wait"
)

// Cluster is what the conformance suite runs against: the nodes of one
// store. Any node accepts any call.
type Cluster struct {
	// Size is the number of nodes.
	Size int
	// Node returns node i's store; it may change after Restart.
	Node func(i int) *eventstore.Store
	// Leader returns the index of the node leading the log (every raft
	// group), waiting for one. Nil for a single node.
	Leader func(t testing.TB) int
	// Stop stops node i (as a process exit would) and Restart starts it
	// again on its data.
	Stop    func(t testing.TB, i int)
	Restart func(t testing.TB, i int)
	// ConnectedTo is set by a cluster whose stores are thin clients of
	// nodes it runs apart from them: it returns the node (as Leader, Stop
	// and Restart count them) that Node(i)'s client uses now, or -1. The
	// suite then checks that a client in use fails over when its node is
	// stopped. Nil when Node(i) is node i itself.
	ConnectedTo func(i int) int
}

// Single opens a fresh embedded single-node store for t.
func Single(t testing.TB, opts ...eventstore.Option) Cluster {
	t.Helper()
	dir := t.TempDir()
	var mu sync.Mutex
	var s *eventstore.Store
	open := func(t testing.TB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := eventstore.Open(ctx, dir, opts...)
		require.NoError(t, err)
		mu.Lock()
		s = st
		mu.Unlock()
	}
	get := func(int) *eventstore.Store {
		mu.Lock()
		defer mu.Unlock()
		return s
	}
	open(t)
	t.Cleanup(func() {
		if st := get(0); st != nil {
			st.Close()
		}
	})
	return Cluster{
		Size: 1,
		Node: get,
		Stop: func(t testing.TB, _ int) {
			mu.Lock()
			st := s
			s = nil
			mu.Unlock()
			require.NoError(t, st.Close())
		},
		Restart: func(t testing.TB, _ int) { open(t) },
	}
}

// Timings are raft timings for tests: failovers within about a second,
// yet safe on a loaded 2-core machine running the race detector.
func Timings(c *raftlog.Config) {
	c.HeartbeatTimeout = 400 * time.Millisecond
	c.ElectionTimeout = 400 * time.Millisecond
	c.LeaderLeaseTimeout = 200 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

// StartCluster starts n voters in this process, over real TCP on
// 127.0.0.1, bootstrapped from one peer list, and stops them when t ends.
func StartCluster(t testing.TB, n int, opts ...eventstore.Option) Cluster {
	t.Helper()
	return startCluster(t, n, nil, opts)
}

// StartTLSCluster is StartCluster with mutual TLS: a fresh development CA
// for cluster "test" and a voter certificate for every node.
func StartTLSCluster(t testing.TB, n int, opts ...eventstore.Option) Cluster {
	t.Helper()
	ca, err := nodecert.NewCA("test", time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, nodecert.WriteFile(caFile, ca.PEM))
	return startCluster(t, n, func(id string) []eventstore.Option {
		cert, key, err := ca.Issue(nodecert.Identity{Cluster: "test", Role: nodecert.Voter, NodeID: id}, time.Hour)
		require.NoError(t, err)
		certFile, keyFile := filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
		require.NoError(t, nodecert.WriteFile(certFile, cert))
		require.NoError(t, nodecert.WriteFile(keyFile, key))
		return []eventstore.Option{eventstore.TLSFiles("test", certFile, keyFile, caFile)}
	}, opts)
}

func startCluster(t testing.TB, n int, perNode func(id string) []eventstore.Option, opts []eventstore.Option) Cluster {
	t.Helper()
	tc := &tcluster{t: t, opts: opts, dir: t.TempDir()}
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		tc.peers = append(tc.peers, eventstore.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: ln.Addr().String()})
	}
	if perNode != nil {
		for _, p := range tc.peers {
			tc.perNode = append(tc.perNode, perNode(p.ID))
		}
	}
	tc.nodes = make([]*eventstore.Store, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = tc.open(i, lns[i])
		}()
	}
	wg.Wait()
	t.Cleanup(tc.closeAll)
	for _, err := range errs {
		require.NoError(t, err)
	}
	return Cluster{Size: n, Node: tc.node, Leader: tc.leader, Stop: tc.stop, Restart: tc.restart}
}

type tcluster struct {
	t    testing.TB
	opts []eventstore.Option
	// perNode holds each node's own options (its certificate).
	perNode [][]eventstore.Option
	dir     string
	peers   []eventstore.Peer
	mu      sync.Mutex
	nodes   []*eventstore.Store
}

func (c *tcluster) open(i int, ln net.Listener) error {
	p := c.peers[i]
	opts := append([]eventstore.Option{
		eventstore.Node(p.ID, p.Addr), eventstore.Peers(c.peers...),
		eventstore.LogConfig(func(cfg *raftlog.Config) {
			Timings(cfg)
			cfg.Listener = ln
			cfg.Advertise = p.Addr
		}),
	}, c.opts...)
	if c.perNode != nil {
		opts = append(opts, c.perNode[i]...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := eventstore.Open(ctx, filepath.Join(c.dir, p.ID), opts...)
	if err != nil {
		ln.Close()
		return fmt.Errorf("open %s: %w", p.ID, err)
	}
	c.mu.Lock()
	c.nodes[i] = s
	c.mu.Unlock()
	return nil
}

func (c *tcluster) node(i int) *eventstore.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

func (c *tcluster) stop(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		require.NoError(t, s.Close())
	}
}

func (c *tcluster) restart(t testing.TB, i int) {
	t.Helper()
	var ln net.Listener
	// The port was this node's a moment ago; retry while the kernel frees it.
	wait.Until(t, 10*time.Second, "listen on "+c.peers[i].Addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", c.peers[i].Addr)
		return err == nil
	})
	require.NoError(t, c.open(i, ln))
}

func (c *tcluster) closeAll() {
	for i := range c.nodes {
		if s := c.node(i); s != nil {
			s.Close()
		}
	}
}

// leader waits until the running nodes agree on one leader of every raft
// group and returns its index.
func (c *tcluster) leader(t testing.TB) int {
	t.Helper()
	found := -1
	wait.Until(t, 20*time.Second, "one leader of every shard", func() bool {
		found = -1
		var id string
		for i := range c.nodes {
			s := c.node(i)
			if s == nil {
				continue
			}
			for _, g := range s.Log().Status().Shards {
				if g.LeaderID == "" || (id != "" && g.LeaderID != id) {
					return false
				}
				id = g.LeaderID
				if g.State == "Leader" {
					found = i
				}
			}
		}
		return found >= 0
	})
	return found
}
