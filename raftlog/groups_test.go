package raftlog

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// groupFSM applies group operations to a fresh FSM of 8 partitions, at
// times given in seconds.
type groupFSM struct {
	t   *testing.T
	f   *fsm
	idx uint64
}

func newGroupFSM(t *testing.T) *groupFSM {
	f, err := openFSM(t.TempDir()+"/fsm.db", 0, 8, 1, time.Hour)
	require.NoError(t, err)
	g := &groupFSM{t: t, f: f}
	t.Cleanup(func() { g.f.close() })
	return g
}

func (g *groupFSM) apply(sec int64, op groupOp) groupOutcome {
	g.idx++
	data := encodeGroupEntry(sec*int64(time.Second), &op)
	out := g.f.ApplyBatch([]*raft.Log{{Index: g.idx, Term: 1, Type: raft.LogCommand, Data: data}})
	return out[0].(groupOutcome)
}

func owners(s GroupState) string {
	out := ""
	for _, a := range s.Partitions {
		o := a.Owner
		if o == "" {
			o = "-"
		}
		if a.Revoking() {
			o += ">" + a.Next
		}
		out += o + " "
	}
	return out
}

func TestGroupMembershipAndFencing(t *testing.T) {
	g := newGroupFSM(t)
	const session = int64(10 * time.Second)
	join := func(sec int64, m string) groupOutcome {
		return g.apply(sec, groupOp{Op: gopJoin, Group: "g", Member: m, Session: session})
	}
	hb := func(sec int64, m string, release ...int) groupOutcome {
		return g.apply(sec, groupOp{Op: gopHeartbeat, Group: "g", Member: m, Release: release})
	}
	commit := func(sec int64, m string, p int, gen, off uint64) groupOutcome {
		return g.apply(sec, groupOp{Op: gopCommit, Group: "g", Member: m, Commits: []OffsetCommit{{Partition: p, Generation: gen, Offset: off}}})
	}

	out := join(0, "a")
	require.NoError(t, out.Err)
	require.Equal(t, "a a a a a a a a ", owners(out.State))
	genA := out.State.Partitions[0].Generation
	require.Equal(t, uint64(1), out.State.Generation)

	// b joins: half of a's partitions are to move, but a keeps them until
	// it releases them: never two owners.
	out = join(1, "b")
	require.Equal(t, "a a a a a>b a>b a>b a>b ", owners(out.State))
	require.NoError(t, commit(2, "a", 5, genA, 40).Err, "the owner may commit before it releases")
	out = hb(3, "a", 4, 5, 6, 7)
	require.NoError(t, out.Err)
	require.Equal(t, "a a a a b b b b ", owners(out.State))
	genB := out.State.Partitions[5].Generation
	require.Greater(t, genB, genA)
	require.Equal(t, uint64(40), out.State.Partitions[5].Committed, "the new owner resumes where a stopped")

	// a's late commit to a partition it released is rejected.
	out = commit(4, "a", 5, genA, 50)
	var sge *StaleGenerationError
	require.ErrorAs(t, out.Err, &sge)
	require.Equal(t, StaleGenerationError{Group: "g", Member: "a", Partition: 5, Generation: genA, Current: genB, Owner: "b"}, *sge)
	require.NoError(t, commit(4, "b", 5, genB, 60).Err)
	require.NoError(t, commit(4, "b", 5, genB, 55).Err)
	require.Equal(t, uint64(60), commit(4, "b", 5, genB, 55).State.Partitions[5].Committed, "a commit never moves back")

	// b stops heartbeating (paused). a's heartbeats after b's session
	// expired hand b's partitions to a at once.
	require.NoError(t, hb(9, "a").Err)
	out = hb(15, "a")
	require.NoError(t, out.Err)
	require.Equal(t, "a a a a a a a a ", owners(out.State))
	require.Len(t, out.State.Members, 1)
	genA2 := out.State.Partitions[5].Generation

	// b comes back from its pause: its commits are rejected, its heartbeat
	// tells it to join again.
	require.ErrorAs(t, commit(16, "b", 5, genB, 70).Err, &sge)
	require.ErrorIs(t, hb(16, "b").Err, ErrUnknownMember)
	out = join(17, "b")
	require.Equal(t, "a a a a a>b a>b a>b a>b ", owners(out.State), "sticky: the same partitions move")
	out = hb(18, "a", 4, 5, 6, 7)
	genB2 := out.State.Partitions[5].Generation
	require.Greater(t, genB2, genA2)
	require.ErrorAs(t, commit(19, "b", 5, genB, 70).Err, &sge, "a grant from before the pause stays stale")
	require.NoError(t, commit(19, "b", 5, genB2, 70).Err)

	// Leaving hands partitions over at once.
	require.NoError(t, g.apply(20, groupOp{Op: gopLeave, Group: "g", Member: "a"}).Err)
	s, ok := g.f.groupState("g")
	require.True(t, ok)
	require.Equal(t, "b b b b b b b b ", owners(s))

	// Parking and retry are recorded with commits, fenced the same way.
	out = g.apply(21, groupOp{Op: gopCommit, Group: "g", Member: "b", Commits: []OffsetCommit{{Partition: 2, Generation: s.Partitions[2].Generation, Offset: 9,
		Park: []ParkedRecord{{Offset: 7, Key: "k", Error: "boom", Attempts: 3}, {Offset: 8, Key: "k", Error: "behind 7"}}}}})
	require.NoError(t, out.Err)
	require.Len(t, out.State.Partitions[2].Parked, 2)
	out = g.apply(22, groupOp{Op: gopRetry, Group: "g", Partition: 2, Offset: 7})
	require.True(t, out.State.Partitions[2].Parked[0].Retry)
	out = g.apply(23, groupOp{Op: gopCommit, Group: "g", Member: "b", Commits: []OffsetCommit{{Partition: 2, Generation: s.Partitions[2].Generation, Offset: 9, Unpark: []uint64{7, 8}}}})
	require.Empty(t, out.State.Partitions[2].Parked)

	// The state survives a restart of the FSM.
	before, _ := g.f.groupState("g")
	path := g.f.path
	require.NoError(t, g.f.close())
	f, err := openFSM(path, 0, 8, 1, time.Hour)
	require.NoError(t, err)
	g.f = f
	after, ok := f.groupState("g")
	require.True(t, ok)
	require.Equal(t, before, after)
}

// The assignment is balanced after every change and sticky: a join or a
// leave moves no more partitions than the balance needs.
func TestGroupAssignmentBalancedAndSticky(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, parts := range []int{1, 7, 8, 64} {
		g := &cgroup{members: map[string]*cmember{}, parts: make([]PartitionAssignment, parts)}
		for step := 0; step < 200; step++ {
			before := slices.Clone(g.parts)
			ids := sortedMembers(g)
			if len(ids) == 0 || (len(ids) < 10 && rng.Intn(2) == 0) {
				g.members[fmt.Sprint("m", rng.Intn(1000))] = &cmember{}
			} else {
				gone := ids[rng.Intn(len(ids))]
				delete(g.members, gone)
				g.dropOwner(gone)
			}
			g.rebalance()
			// settle: every owner releases what it must
			for i := range g.parts {
				if g.parts[i].Revoking() {
					g.parts[i].Owner = ""
				}
			}
			g.rebalance()
			counts := map[string]int{}
			for _, a := range g.parts {
				require.False(t, a.Revoking())
				if len(g.members) > 0 {
					require.Contains(t, g.members, a.Owner)
				}
				counts[a.Owner]++
			}
			lo, hi := parts, 0
			for id := range g.members {
				lo, hi = min(lo, counts[id]), max(hi, counts[id])
			}
			if len(g.members) > 0 {
				require.LessOrEqual(t, hi-lo, 1, "balanced")
			}
			moved := 0
			for i := range before {
				if before[i].Owner != "" && before[i].Owner != g.parts[i].Owner {
					if _, alive := g.members[before[i].Owner]; alive {
						moved++
					}
				}
			}
			// A surviving member gives up only what exceeds its new quota.
			require.LessOrEqual(t, moved, parts/max(1, len(g.members))+1, "sticky")
		}
	}
}

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
	s, err = f.Heartbeat(ctx, "workers", "w1", []int{4, 5, 6, 7})
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
		eventually(t, 10*time.Second, "replica has the commit", func() bool {
			st, ok, err := c.node(i).GroupState("workers")
			return err == nil && ok && st.Partitions[3].Committed == 3
		})
	}
}
