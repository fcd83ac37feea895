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
	g := New(4)
	for i, m := range []string{"m1", "m2"} {
		out := g.Apply(&wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: m, Session: 5e9}, int64(i+1))
		require.NoError(f, out.Err)
		f.Add(Encode(nil, g))
	}
	f.Add(Encode(nil, FromState(&core.GroupState{Generation: 3, Members: []core.GroupMember{{ID: "m", SessionTimeout: 5}},
		Partitions: []core.PartitionAssignment{{Owner: "m", Generation: 3, Committed: 9, Parked: []core.ParkedRecord{{Offset: 4, Key: "k", Error: "e", Attempts: 2}}}}})))
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
