package raftlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// rjVoter reports whether node id is a voter of shard s as l sees it.
func rjVoter(l *Log, s Shard, id string) bool {
	for _, srv := range l.Status().Shards[s].Servers {
		if srv.ID == id {
			return srv.Voter
		}
	}
	return false
}

// rjOpenAsync starts node i in the background (its Open may wait for the
// cluster) and returns where its outcome arrives.
func rjOpenAsync(c *testCluster, i int) <-chan error {
	c.t.Helper()
	var ln net.Listener
	wait.Until(c.t, 10*time.Second, "listen on "+c.nodes[i].addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", c.nodes[i].addr)
		return err == nil
	})
	done := make(chan error, 1)
	go func() { done <- c.openErr(i, ln) }()
	return done
}

// TestWipedNodeRejoinsWithoutVoting is issue #16's scenario: one voter is
// cut off (stale); records are acknowledged by the other two; both stop;
// one of them loses its data directory and restarts with its original
// configuration (same Peers). With only the stale node to talk to, it must
// not bootstrap again and hand the stale node its vote: no leader may
// appear. Once the up-to-date node is back, the wiped node rejoins as a
// non-voter, catches up, is promoted, and every acknowledged record is on
// every node.
func TestWipedNodeRejoinsWithoutVoting(t *testing.T) {
	longTest(t)
	const n = 50
	c := newCluster(t, 3, nil)
	acks := newCtAcks()
	li := c.leader(0)
	stale, wiped := (li+1)%3, (li+2)%3
	c.net.Isolate(c.nodes[stale].addr, c.addrs(li, wiped))
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("order-%d", i)
		ctMustAppend(t, c, acks, li, key, ctRecords(key, 1, 1))
	}
	want := appliedIndex(t, c.node(li), 0)
	wait.Until(t, 20*time.Second, "the wiped-to-be node to apply every acknowledged record", func() bool {
		return appliedIndex(t, c.node(wiped), 0) >= want
	})
	require.Less(t, appliedIndex(t, c.node(stale), 0), want, "the stale node must have missed the records")

	c.stop(li)
	c.stop(wiped)
	require.NoError(t, os.RemoveAll(c.nodes[wiped].dir))
	c.net.Heal()
	opened := rjOpenAsync(c, wiped)

	// The stale node and the wiped one alone: several election timeouts
	// go by, and the stale node must never lead (it would with the vote of
	// an empty log), nor accept an append.
	deadline := time.Now().Add(4 * time.Second)
	var openedEarly <-chan error
	for time.Now().Before(deadline) {
		require.NotEqual(t, raft.Leader, c.node(stale).shards[0].Raft.State(), "the stale node became leader")
		select {
		case err := <-opened:
			require.NoError(t, err)
			openedEarly, opened = opened, nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.Nil(t, openedEarly, "the wiped node finished opening without the up-to-date node")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := c.node(stale).Append(ctx, "probe", ctRecords("probe", 1, 1))
	cancel()
	require.ErrorIs(t, err, ErrNoLeader)

	c.open(li, nil)
	select {
	case err := <-opened:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the wiped node did not rejoin")
	}
	wiperID := c.nodes[wiped].id
	wait.Until(t, 30*time.Second, wiperID+" promoted to voter", func() bool {
		l := c.node(c.leader(0))
		return rjVoter(l, 0, wiperID)
	})
	c.converged()
	ctVerifyNodes(t, c, acks, 3)
	for _, i := range []int{li, stale, wiped} {
		got := 0
		for p := Partition(0); int(p) < c.node(i).Partitions(); p++ {
			got += len(readAll(t, c.node(i), p))
		}
		require.Equal(t, n, got, "records on %s", c.nodes[i].id)
	}
}

// TestRejoinedNodePromotedAfterLongReplay wipes a node of a cluster whose
// log holds many entries: catching up, the node replays the old
// configurations, in which it is still a voter, before the one that made
// it a non-voter. It must be promoted all the same once caught up. The
// fault suite's wipe faults found it never was (#16): the node took an old
// configuration for its own promotion and stopped trying.
func TestRejoinedNodePromotedAfterLongReplay(t *testing.T) {
	c := newCluster(t, 3, nil)
	acks := newCtAcks()
	li := c.leader(0)
	wiped := (li + 1) % 3
	// One entry per append: the replay takes many AppendEntries rounds.
	for i := 0; i < 1500; i++ {
		key := fmt.Sprintf("k-%d", i%50)
		ctMustAppend(t, c, acks, li, key, ctRecords(key, uint64(i/50)+1, 1))
	}
	c.stop(wiped)
	require.NoError(t, os.RemoveAll(c.nodes[wiped].dir))
	select {
	case err := <-rjOpenAsync(c, wiped):
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the wiped node did not rejoin")
	}
	id := c.nodes[wiped].id
	wait.Until(t, 30*time.Second, id+" promoted to voter", func() bool {
		return rjVoter(c.node(c.leader(0)), 0, id)
	})
	c.converged()
	ctVerifyNodes(t, c, acks, 3)
}

// TestLateVoterJoinsFormedCluster starts two of three voters; they form
// the cluster and take appends. The third, started 2 s later with the same
// peer list, finds a cluster and joins it (as a non-voter first, then
// promoted) instead of forming its own.
func TestLateVoterJoinsFormedCluster(t *testing.T) {
	longTest(t)
	c, lns := newStoppedCluster(t, 3, nil, nil)
	c.openTogether(lns, []int{0, 1})
	li := c.leader(0, 0, 1)
	acks := newCtAcks()
	for i := 0; i < 10; i++ {
		ctMustAppend(t, c, acks, li, fmt.Sprintf("k%d", i), ctRecords(fmt.Sprintf("k%d", i), 1, 1))
	}
	time.Sleep(2 * time.Second) // the scenario: a node started late
	c.openTogether(lns, []int{2})
	wait.Until(t, 30*time.Second, "n3 promoted to voter", func() bool {
		return rjVoter(c.node(c.leader(0)), 0, "n3")
	})
	c.converged()
	ctVerifyNodes(t, c, acks, 3)
	st := c.node(2).Status().Shards[0]
	require.Len(t, st.Servers, 3)
}

// TestWrongPeersFailOpen: a node with no data whose peer list does not
// match a cluster fails Open with a clear error instead of waiting as a
// candidate.
func TestWrongPeersFailOpen(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.leader(0)
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		return ln.Addr().String()
	}
	open := func(peers []Peer, timeout time.Duration) error {
		cfg := c.base
		cfg.NodeID = "n4"
		cfg.Dir = filepath.Join(t.TempDir(), "n4")
		cfg.Addr = "127.0.0.1:0"
		cfg.Peers = peers
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		l, err := Open(ctx, cfg)
		if err == nil {
			l.Close()
		}
		return err
	}
	self := Peer{ID: "n4", Addr: "127.0.0.1:1"} // only its ID matters to itself

	t.Run("unreachable", func(t *testing.T) {
		start := time.Now()
		err := open([]Peer{self, {ID: "n5", Addr: free()}, {ID: "n6", Addr: free()}}, 3*time.Second)
		require.ErrorIs(t, err, ErrNoLeader)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Contains(t, err.Error(), "n5 at")
		require.Less(t, time.Since(start), 10*time.Second)
	})
	t.Run("wrong node at an address", func(t *testing.T) {
		err := open([]Peer{self, {ID: "n5", Addr: c.nodes[0].addr}, {ID: "n6", Addr: free()}}, 10*time.Second)
		require.ErrorIs(t, err, ErrConfig)
		require.Contains(t, err.Error(), `the node there is "n1"`)
	})
	t.Run("not a member", func(t *testing.T) {
		err := open([]Peer{self, {ID: "n1", Addr: c.nodes[0].addr}, {ID: "n2", Addr: c.nodes[1].addr}}, 10*time.Second)
		require.ErrorIs(t, err, ErrConfig)
		require.True(t, strings.Contains(err.Error(), "not a member"), err.Error())
		require.False(t, errors.Is(err, ErrNoLeader))
	})
}
