package raftlog

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// storedIdentity reads a node's raftlog.json.
func storedIdentity(t testing.TB, dir string) identity {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "raftlog.json"))
	require.NoError(t, err)
	var id identity
	require.NoError(t, json.Unmarshal(b, &id))
	return id
}

// waitClusterID waits until every running node has applied and stored one
// cluster ID, and returns it.
func waitClusterID(t *testing.T, c *testCluster) string {
	t.Helper()
	var id string
	wait.Until(t, 20*time.Second, "every node to learn the cluster ID", func() bool {
		id = ""
		for i := range c.nodes {
			l := c.node(i)
			if l == nil {
				continue
			}
			got := l.shards[0].engine.ClusterID()
			if got == "" || (id != "" && got != id) || storedIdentity(t, c.nodes[i].dir).ClusterID != got {
				return false
			}
			id = got
		}
		return id != ""
	})
	return id
}

// A fresh cluster gets one identity, the same on every node, in Status, in
// the probe answer and in raftlog.json; it survives restarts of one node
// and of the whole cluster; a wiped node that rejoins adopts it.
func TestClusterIDSameOnEveryNodeAndKept(t *testing.T) {
	c := newCluster(t, 3, func(c *Config) { c.Shards = 2; c.Partitions = 4 })
	id := waitClusterID(t, c)
	_, err := uuid.Parse(id)
	require.NoError(t, err)
	for i := range c.nodes {
		l := c.node(i)
		require.Equal(t, id, l.ClusterID())
		require.Equal(t, id, l.Status().ClusterID)
		st, err := c.node((i+1)%3).router.Probe(context.Background(), c.nodes[i].addr)
		require.NoError(t, err)
		require.Equal(t, id, st.ClusterID, "the probe answer of %s", c.nodes[i].id)
	}

	c.restart(1)
	require.Equal(t, id, c.node(1).ClusterID(), "known at once after a restart")

	for i := range c.nodes {
		c.stop(i)
	}
	var done []<-chan error
	for i := range c.nodes {
		done = append(done, rjOpenAsync(c, i))
	}
	for _, d := range done {
		require.NoError(t, <-d)
	}
	c.leader(0)
	require.Equal(t, id, waitClusterID(t, c), "the whole cluster restarted")

	// A wiped node adopts the identity of the cluster it rejoins.
	c.stop(2)
	require.NoError(t, os.RemoveAll(c.nodes[2].dir))
	opened := rjOpenAsync(c, 2)
	require.NoError(t, <-opened)
	require.Equal(t, id, storedIdentity(t, c.nodes[2].dir).ClusterID)
	require.Equal(t, id, waitClusterID(t, c))
}

// Issue #16's remaining hole: a majority of the voters lose their data
// together and form a new cluster; the surviving voter, with its old log,
// must not join it. Its Open fails with ErrConfig naming both clusters.
func TestNodeOfAnotherClusterFailsOpen(t *testing.T) {
	longTest(t)
	c := newCluster(t, 3, nil)
	old := waitClusterID(t, c)
	for i := range c.nodes {
		c.stop(i)
	}
	require.NoError(t, os.RemoveAll(c.nodes[1].dir))
	require.NoError(t, os.RemoveAll(c.nodes[2].dir))
	d1, d2 := rjOpenAsync(c, 1), rjOpenAsync(c, 2)
	require.NoError(t, <-d1)
	require.NoError(t, <-d2)
	c.leader(0, 1, 2)
	fresh := waitClusterID(t, c)
	require.NotEqual(t, old, fresh, "the wiped majority formed a new cluster")

	err := <-rjOpenAsync(c, 0)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), old)
	require.Contains(t, err.Error(), fresh)
	require.Nil(t, c.node(0))
}

// A single node gets a cluster ID too, and a raftlog.json written before
// cluster IDs existed (without the field) still opens and stores the ID
// once the node knows it.
func TestClusterIDOldIdentityFileAdoptsIt(t *testing.T) {
	dir := t.TempDir()
	l := openSingle(t, dir, nil)
	wait.Until(t, 10*time.Second, "a cluster ID", func() bool { return storedIdentity(t, dir).ClusterID != "" })
	id := l.ClusterID()
	require.Equal(t, id, storedIdentity(t, dir).ClusterID)
	require.NoError(t, l.Close())

	// raftlog.json as older versions wrote it: the applied ID is stored again on open.
	old := storedIdentity(t, dir)
	old.ClusterID = ""
	require.NoError(t, writeIdentity(dir, old))
	b, err := os.ReadFile(filepath.Join(dir, "raftlog.json"))
	require.NoError(t, err)
	require.NotContains(t, string(b), "cluster_id")
	l = openSingle(t, dir, nil)
	require.Equal(t, id, l.ClusterID())
	require.Equal(t, id, storedIdentity(t, dir).ClusterID)
}

// TestRaftRPCsFromAnotherClusterRefused: a raft connection starts with the
// dialing node's cluster ID; a node drops one from another cluster before
// raft reads an RPC from it (issue #20: a restored cluster refuses to talk
// to the old one, whose nodes may hold its addresses in their raft
// configuration). Connections of its own cluster, of a node with no
// cluster ID yet (forming, or wiped and rejoining), and of a node from
// before the preamble, pass.
func TestRaftRPCsFromAnotherClusterRefused(t *testing.T) {
	var tl transferLog
	tl.match = "another cluster"
	c := newCluster(t, 3, func(cfg *Config) { cfg.Logger = slog.New(tl.handler()) })
	ours := waitClusterID(t, c)
	li := c.leader(0)
	addr := c.nodes[li].addr
	o := newOutsider(t, nil)
	other := uuid.NewString()

	err := o.appendEntriesAs(t, "n2", other, addr)
	require.Error(t, err)
	require.NotEmpty(t, tl.find("raftlog: raft connection from another cluster refused",
		map[string]string{"peer_cluster": other, "cluster": ours}), "the refusal is logged with both IDs")
	require.NoError(t, o.appendEntriesAs(t, "n2", ours, addr))
	require.NoError(t, o.appendEntriesAs(t, "n2", "", addr))
	require.NoError(t, o.appendEntriesLegacy(t, "n2", addr), "a node from before the preamble passes (rolling upgrades)")
	// The cluster runs on: its own connections carry its ID.
	_, err = c.node(li).Append(context.Background(), "k", []NewRecord{rec("after")})
	require.NoError(t, err)
}
