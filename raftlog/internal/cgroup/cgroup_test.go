package cgroup

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// The assignment is balanced after every change and sticky: a join or a
// leave moves no more partitions than the balance needs.
func TestGroupAssignmentBalancedAndSticky(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, parts := range []int{1, 7, 8, 64} {
		g := &Group{members: map[string]*member{}, parts: make([]core.PartitionAssignment, parts)}
		for step := 0; step < 200; step++ {
			before := slices.Clone(g.parts)
			ids := sortedMembers(g)
			if len(ids) == 0 || (len(ids) < 10 && rng.Intn(2) == 0) {
				g.members[fmt.Sprint("m", rng.Intn(1000))] = &member{}
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

// FuzzDecode feeds arbitrary bytes to the decoder of a group's stored form,
// which travels in state files, full copies and group replies from the
// coordinator: it must not panic, and what decodes must encode back to
// the same group.
func FuzzDecode(f *testing.F) {
	var g *Group
	for i, m := range []string{"m1", "m2"} {
		var out core.GroupOutcome
		out, g = Apply(g, &wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: m, Session: 5e9}, int64(i+1), 4)
		require.NoError(f, out.Err)
		f.Add(Encode(nil, g))
	}
	f.Add(Encode(nil, FromState(&core.GroupState{Generation: 3, Members: []core.GroupMember{{ID: "m", SessionTimeout: 5}},
		Partitions: []core.PartitionAssignment{{Owner: "m", Generation: 3, Committed: 9, Parked: []core.ParkedRecord{{Offset: 4, Key: "k", Error: "e", Attempts: 2}}}}})))
	f.Add(Encode(nil, FromState(&core.GroupState{Generation: 3, Partitions: []core.PartitionAssignment{
		{Committed: 9, Skipped: 2, Parked: []core.ParkedRecord{{Offset: 4, Key: "k", Retry: true}, {Offset: 5, Key: "k", Skip: true}}}, {}}})))
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Decode(Encode(nil, g))
		require.NoError(t, err)
		require.Equal(t, g.State("g"), again.State("g"))
	})
}

// apply runs op on g at time t and returns the outcome and the group after.
func apply(g *Group, op wire.GroupOp, t int64) (core.GroupOutcome, *Group) {
	if err := op.Check(); err != nil {
		return core.GroupOutcome{Err: err}, g
	}
	return Apply(g, &op, t, 2)
}

// A group created by a join at offsets starts there; a later join at
// other offsets changes nothing. Reset and delete are refused while a
// member is live and apply once its session has expired; a reset moves
// offsets back and drops the parked records it replays; a commit below
// the committed offset is refused whole.
func TestGroupStartResetDeleteAndCommitBehind(t *testing.T) {
	const sec = int64(1e9)
	out, g := apply(nil, wire.GroupOp{Op: wire.GopJoinAt, Group: "g", Member: "a", Session: sec, Offsets: []uint64{5, 9}}, 1)
	require.NoError(t, out.Err)
	require.Equal(t, []uint64{5, 9}, committed(out.State))
	out, g = apply(g, wire.GroupOp{Op: wire.GopJoinAt, Group: "g", Member: "b", Session: sec, Offsets: []uint64{0, 0}}, 2)
	require.NoError(t, out.Err)
	require.Equal(t, []uint64{5, 9}, committed(out.State), "an existing group keeps its offsets")
	out, g = apply(g, wire.GroupOp{Op: wire.GopLeave, Group: "g", Member: "b"}, 3)
	require.NoError(t, out.Err)

	a := out.State.Partitions[1]
	require.Equal(t, "a", a.Owner)
	commit := func(off uint64, park ...core.ParkedRecord) error {
		out, g = apply(g, wire.GroupOp{Op: wire.GopCommit, Group: "g", Member: "a",
			Commits: []core.OffsetCommit{{Partition: 0, Generation: out.State.Partitions[0].Generation, Offset: 6},
				{Partition: 1, Generation: a.Generation, Offset: off, Park: park}}}, 4)
		return out.Err
	}
	require.NoError(t, commit(12, core.ParkedRecord{Offset: 3, Key: "k"}, core.ParkedRecord{Offset: 10, Key: "k"}))
	require.NoError(t, commit(12), "the same offset again (a retry) is accepted")
	require.ErrorIs(t, commit(11), core.ErrCommitBehind)
	require.Equal(t, []uint64{6, 12}, committed(out.State), "a refused commit applies nothing")

	for _, op := range []wire.GroupOp{{Op: wire.GopReset, Group: "g", Offsets: []uint64{0, 0}}, {Op: wire.GopDelete, Group: "g"}} {
		out, g = apply(g, op, 5)
		require.ErrorIs(t, out.Err, core.ErrGroupActive)
		require.ErrorContains(t, out.Err, `"g" has 1 (a)`)
		require.Equal(t, []uint64{6, 12}, committed(out.State))
	}
	out, _ = apply(g, wire.GroupOp{Op: wire.GopReset, Group: "g", Offsets: []uint64{0}}, 3*sec)
	require.ErrorIs(t, out.Err, core.ErrConfig, "one offset per partition")

	gen := out.State.Generation
	out, g = apply(g, wire.GroupOp{Op: wire.GopReset, Group: "g", Offsets: []uint64{0, 7}}, 3*sec) // a's session is over
	require.NoError(t, out.Err)
	require.Empty(t, out.State.Members)
	require.Equal(t, []uint64{0, 7}, committed(out.State))
	require.Equal(t, []core.ParkedRecord{{Offset: 3, Key: "k"}}, out.State.Partitions[1].Parked, "the parked record at 10 is replayed")
	require.Greater(t, out.State.Generation, gen)

	out, g = apply(g, wire.GroupOp{Op: wire.GopDelete, Group: "g"}, 3*sec)
	require.NoError(t, out.Err)
	require.Nil(t, g)
	out, g = apply(g, wire.GroupOp{Op: wire.GopDelete, Group: "g"}, 3*sec)
	require.NoError(t, out.Err, "deleting a deleted group is a no-op (a retry)")
	require.Nil(t, g)
	out, _ = apply(g, wire.GroupOp{Op: wire.GopReset, Group: "g", Offsets: []uint64{0, 0}}, 3*sec)
	require.ErrorIs(t, out.Err, core.ErrUnknownGroup)
	out, _ = apply(nil, wire.GroupOp{Op: wire.GopJoinAt, Group: "g", Member: "a", Session: sec, Offsets: []uint64{1, 2, 3}}, 1)
	require.ErrorIs(t, out.Err, core.ErrConfig, "a start offset per partition")
}

func committed(s core.GroupState) []uint64 {
	var out []uint64
	for _, a := range s.Partitions {
		out = append(out, a.Committed)
	}
	return out
}

// A skip marks a parked record; the owner's commit that unparks it counts
// it in the partition's Skipped, which the stored form keeps (and a group
// never skipped from is stored as before skips existed). Unparking a
// record not marked (a retry that handled it) counts nothing; a skip of
// an offset not parked changes nothing.
func TestGroupSkipParked(t *testing.T) {
	out, g := apply(nil, wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: "a", Session: 1e9}, 1)
	require.NoError(t, out.Err)
	gen := out.State.Partitions[1].Generation
	park := []core.ParkedRecord{{Offset: 3, Key: "k", Error: "e", Attempts: 5}, {Offset: 4, Key: "k"}, {Offset: 6, Key: "j"}}
	out, g = apply(g, wire.GroupOp{Op: wire.GopCommit, Group: "g", Member: "a", Commits: []core.OffsetCommit{{Partition: 1, Generation: gen, Offset: 8, Park: park}}}, 2)
	require.NoError(t, out.Err)

	out, g = apply(g, wire.GroupOp{Op: wire.GopSkip, Group: "g", Partition: 1, Offset: 5}, 3)
	require.NoError(t, out.Err)
	require.Equal(t, park, out.State.Partitions[1].Parked, "no parked record at offset 5: nothing marked")
	out, g = apply(g, wire.GroupOp{Op: wire.GopSkip, Group: "g", Partition: 1, Offset: 3}, 3)
	require.NoError(t, out.Err)
	require.True(t, out.State.Partitions[1].Parked[0].Skip)
	require.Zero(t, out.State.Partitions[1].Skipped, "counted once the owner has dropped it")

	out, g = apply(g, wire.GroupOp{Op: wire.GopCommit, Group: "g", Member: "a", Commits: []core.OffsetCommit{{Partition: 1, Generation: gen, Offset: 8, Unpark: []uint64{3, 6}}}}, 4)
	require.NoError(t, out.Err)
	require.Equal(t, []core.ParkedRecord{{Offset: 4, Key: "k"}}, out.State.Partitions[1].Parked)
	require.Equal(t, uint64(1), out.State.Partitions[1].Skipped, "6 was handled (a retry), 3 skipped")
	require.Zero(t, out.State.Partitions[0].Skipped)

	stored, err := Decode(Encode(nil, g))
	require.NoError(t, err)
	require.Equal(t, g.State("g"), stored.State("g"))
	withCounts := Encode(nil, g)
	withoutCounts := Encode(nil, FromState(&core.GroupState{Generation: g.generation, Members: out.State.Members,
		Partitions: []core.PartitionAssignment{g.parts[0], {Partition: 1, Owner: "a", Generation: gen, Committed: 8, Parked: g.parts[1].Parked}}}))
	require.Equal(t, withoutCounts, withCounts[:len(withoutCounts)], "the counts follow the form of before")
	require.Len(t, withCounts, len(withoutCounts)+3, "2 partitions, one count of 1")

	out, g = apply(g, wire.GroupOp{Op: wire.GopReset, Group: "g", Offsets: []uint64{0, 0}}, 3e9)
	require.NoError(t, out.Err)
	require.Equal(t, uint64(1), out.State.Partitions[1].Skipped, "a reset keeps the record of skips")
}
