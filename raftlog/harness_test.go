package raftlog

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/testnet"
	"github.com/esraft/esraft/systemtest/wait"
)

// testTimings are raft timings short enough for quick failovers yet safe on
// a loaded 2-core machine running the race detector.
func testTimings(c *Config) {
	c.HeartbeatTimeout = 400 * time.Millisecond
	c.ElectionTimeout = 400 * time.Millisecond
	c.LeaderLeaseTimeout = 200 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

// testCluster runs nodes in this process over real TCP on 127.0.0.1, every
// link through a testnet.Network so tests can partition them.
type testCluster struct {
	t    testing.TB
	net  *testnet.Network
	base Config
	// perNode, if set, adjusts each node's configuration (its NodeID set)
	// before its first start: per-node TLS files.
	perNode func(*Config)
	mu      sync.Mutex
	nodes   []*testNode
}

type testNode struct {
	id, addr, dir string
	cfg           Config
	log           *Log // nil while stopped
}

// newCluster starts n voters bootstrapped from the same peer list. mod,
// if not nil, adjusts the shared configuration.
func newCluster(t testing.TB, n int, mod func(*Config)) *testCluster {
	t.Helper()
	return newClusterPerNode(t, n, mod, nil)
}

// newClusterPerNode is newCluster with a per-node adjustment (perNode).
func newClusterPerNode(t testing.TB, n int, mod, perNode func(*Config)) *testCluster {
	t.Helper()
	c, lns := newStoppedCluster(t, n, mod, perNode)
	// A node with no data waits for a majority of its peers before it
	// forms the cluster: start them together, as processes would be.
	c.openTogether(lns, nil)
	return c
}

// newStoppedCluster configures n voters with one peer list and returns the
// listeners reserved at their addresses; none is started.
func newStoppedCluster(t testing.TB, n int, mod, perNode func(*Config)) (*testCluster, []net.Listener) {
	t.Helper()
	c := &testCluster{t: t, net: testnet.New(), perNode: perNode}
	testTimings(&c.base)
	if mod != nil {
		mod(&c.base)
	}
	var peers []Peer
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		id := fmt.Sprintf("n%d", i+1)
		peers = append(peers, Peer{ID: id, Addr: ln.Addr().String()})
	}
	dir := t.TempDir()
	for i := range lns {
		cfg := c.base
		cfg.NodeID = peers[i].ID
		cfg.Dir = filepath.Join(dir, peers[i].ID)
		cfg.Peers = peers
		if c.perNode != nil {
			c.perNode(&cfg)
		}
		c.nodes = append(c.nodes, &testNode{id: peers[i].ID, addr: peers[i].Addr, dir: cfg.Dir, cfg: cfg})
	}
	t.Cleanup(c.closeAll)
	return c, lns
}

// openTogether starts the nodes with the given indexes (all when idx is
// nil) concurrently, node i on lns[i].
func (c *testCluster) openTogether(lns []net.Listener, idx []int) {
	c.t.Helper()
	if idx == nil {
		for i := range lns {
			idx = append(idx, i)
		}
	}
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = c.openErr(i, lns[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(c.t, err)
	}
}

// open starts node i, on ln or on a new listener at its address.
func (c *testCluster) open(i int, ln net.Listener) {
	c.t.Helper()
	nd := c.nodes[i]
	if ln == nil {
		var err error
		// The port was ours a moment ago; retry while the kernel releases it.
		wait.Until(c.t, 10*time.Second, "listen on "+nd.addr, func() bool {
			ln, err = net.Listen("tcp", nd.addr)
			return err == nil
		})
	}
	require.NoError(c.t, c.openErr(i, ln))
}

// openErr starts node i on ln, which must be set.
func (c *testCluster) openErr(i int, ln net.Listener) error {
	nd := c.nodes[i]
	cfg := nd.cfg
	cfg.Listener = ln
	cfg.Advertise = nd.addr
	cfg.Dialer = c.net.Dialer(nd.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open(ctx, cfg)
	if err != nil {
		ln.Close()
		return fmt.Errorf("open %s: %w", nd.id, err)
	}
	c.mu.Lock()
	nd.log = l
	c.mu.Unlock()
	return nil
}

// add starts a new node that joins through node via, as a non-voter if
// nonVoter is set, and returns its index.
func (c *testCluster) add(via int, nonVoter bool) int {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(c.t, err)
	id := fmt.Sprintf("n%d", len(c.nodes)+1)
	cfg := c.base
	cfg.NodeID = id
	cfg.Dir = filepath.Join(c.t.TempDir(), id)
	cfg.Join = c.nodes[via].addr
	cfg.NonVoter = nonVoter
	if c.perNode != nil {
		c.perNode(&cfg)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, &testNode{id: id, addr: ln.Addr().String(), dir: cfg.Dir, cfg: cfg})
	i := len(c.nodes) - 1
	c.mu.Unlock()
	c.open(i, ln)
	return i
}

func (c *testCluster) node(i int) *Log {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].log
}

// stop closes node i (a clean stop: the process would exit here).
func (c *testCluster) stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	l := c.nodes[i].log
	c.nodes[i].log = nil
	c.mu.Unlock()
	if l != nil {
		require.NoError(c.t, l.Close())
	}
}

func (c *testCluster) restart(i int) {
	c.t.Helper()
	c.stop(i)
	c.open(i, nil)
}

func (c *testCluster) closeAll() {
	for i := range c.nodes {
		c.mu.Lock()
		l := c.nodes[i].log
		c.nodes[i].log = nil
		c.mu.Unlock()
		if l != nil {
			l.Close()
		}
	}
}

// addrs returns the addresses of the nodes with the given indexes (all
// nodes when none are given).
func (c *testCluster) addrs(idx ...int) []string {
	if len(idx) == 0 {
		for i := range c.nodes {
			idx = append(idx, i)
		}
	}
	var out []string
	for _, i := range idx {
		out = append(out, c.nodes[i].addr)
	}
	return out
}

// leader waits until the running nodes among among agree on one leader of
// group g and returns its index. A nil among means every running node.
func (c *testCluster) leader(g int, among ...int) int {
	c.t.Helper()
	if len(among) == 0 {
		for i := range c.nodes {
			if c.node(i) != nil {
				among = append(among, i)
			}
		}
	}
	found := -1
	wait.Until(c.t, 20*time.Second, fmt.Sprintf("a leader of group %d", g), func() bool {
		found = -1
		var leaderID raft.ServerID
		for _, i := range among {
			l := c.node(i)
			if l == nil {
				return false
			}
			r := l.shards[g].Raft
			_, id := r.LeaderWithID()
			if id == "" || (leaderID != "" && id != leaderID) {
				return false
			}
			leaderID = id
			if r.State() == raft.Leader {
				found = i
			}
		}
		return found >= 0
	})
	return found
}

// converged waits until every running node has applied what the leader of
// each group has applied. (Raft does not hand no-op entries to the state
// machine, so applied indexes are compared with each other, not with the
// commit index.) Call it once appends have stopped.
func (c *testCluster) converged() {
	c.t.Helper()
	for g := 0; g < c.base.Shards || (g == 0 && c.base.Shards == 0); g++ {
		li := c.leader(g)
		wait.Until(c.t, 30*time.Second, fmt.Sprintf("replicas of group %d to converge", g), func() bool {
			want := appliedIndex(c.t, c.node(li), Shard(g))
			for i := range c.nodes {
				if l := c.node(i); l != nil && appliedIndex(c.t, l, Shard(g)) < want {
					return false
				}
			}
			return true
		})
	}
}

// readAll reads every record of partition p on l.
func readAll(t testing.TB, l *Log, p Partition) []Record {
	t.Helper()
	var out []Record
	for from := uint64(0); ; {
		recs, err := l.Read(context.Background(), p, from, ReadOptions{MaxRecords: 5000})
		require.NoError(t, err)
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Offset + 1
	}
}

// appliedIndex is the raft index l has applied in shard s.
func appliedIndex(t testing.TB, l *Log, s Shard) uint64 {
	t.Helper()
	pos, err := l.Applied(s)
	require.NoError(t, err)
	return pos.Index
}
