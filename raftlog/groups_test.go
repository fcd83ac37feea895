package raftlog

import (
	"context"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/wait"
	"github.com/stretchr/testify/require"
)

// Group operations from a follower are forwarded to group 0's leader, and
// a stale commit comes back typed.
func TestGroupOperationsFromFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	lead := c.leader(0)
	f := c.node((lead + 1) % 3)
	s, err := f.JoinGroup(ctx, "workers", "w1", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "w1", s.Partitions[3].Owner)
	gen := s.Partitions[3].Generation
	s, err = c.node((lead+2)%3).JoinGroup(ctx, "workers", "w2", 5*time.Second)
	require.NoError(t, err)
	require.True(t, s.Partitions[7].Revoking())
	s, err = f.Heartbeat(ctx, "workers", "w1", []Partition{4, 5, 6, 7})
	require.NoError(t, err)
	_, err = f.CommitOffsets(ctx, "workers", "w1", []OffsetCommit{{Partition: 7, Generation: gen, Offset: 3}})
	var sge *StaleGenerationError
	require.ErrorAs(t, err, &sge)
	require.Equal(t, "w2", sge.Owner)
	_, err = f.CommitOffsets(ctx, "workers", "w1", []OffsetCommit{{Partition: 3, Generation: gen, Offset: 3}})
	require.NoError(t, err)
	_, err = f.Heartbeat(ctx, "workers", "nobody", nil)
	require.ErrorIs(t, err, ErrUnknownMember)
	for i := 0; i < 3; i++ {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, c.node(i).WaitGroupChange(wctx, "workers", s.Generation-1))
		cancel()
		wait.Until(t, 10*time.Second, "replica has the commit", func() bool {
			st, ok, err := c.node(i).GroupState("workers")
			return err == nil && ok && st.Partitions[3].Committed == 3
		})
	}
}
