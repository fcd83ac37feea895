// Package cgroup is the consumer-group state machine: membership and
// session expiry, the balanced and sticky assignment with cooperative moves,
// generation fencing of commits, and parked records. It is deterministic: it
// reads only the operation and the leader time of its entry. The state engine
// holds the groups, persists them with its flushes and calls Apply on raft's
// FSM goroutine.
//
// A consumer group shares the partitions of the log among its members,
// each partition processed by one member at a time. Membership,
// generation, assignment and committed offsets are state of shard
// 0's state machine (the coordinator), replicated like records, so every
// node can read them and every change is fenced by the log's order.
//
// Time comes from the entries (leader-stamped), so expiry is
// deterministic: a member whose last heartbeat is older than its session
// timeout, at the time of any later operation on its group, is removed.
// Live members heartbeat every fraction of their timeout, so a dead
// member is noticed within its timeout plus one heartbeat interval.
//
// Moves are cooperative: when the balanced, sticky assignment gives a
// partition to another member, the partition's Next names that member
// while its Owner keeps it until it releases it (after finishing or
// abandoning its in-flight work) or its session expires. A partition thus
// never has two owners at once. Every change of owners increments the
// group's generation, and a partition granted to a member records the
// generation of the grant: commits must carry it, so a member that lost a
// partition (a zombie back from a pause, after its session expired) can
// never commit to it again, even if the partition came back to it since.

// It imports core and wire.
package cgroup

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Group is a consumer group's state in the FSM.
type Group struct {
	generation uint64
	members    map[string]*member
	parts      []core.PartitionAssignment
}

type member struct {
	session  int64
	lastSeen int64
}

// Encode is the stored form of a group (bucket "cg", key: its name).
func Encode(b []byte, g *Group) []byte {
	b = binary.AppendUvarint(b, g.generation)
	ids := sortedMembers(g)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		m := g.members[id]
		b = wire.AppendString(b, id)
		b = binary.AppendVarint(b, m.session)
		b = binary.AppendVarint(b, m.lastSeen)
	}
	b = binary.AppendUvarint(b, uint64(len(g.parts)))
	for _, a := range g.parts {
		b = wire.AppendString(b, a.Owner)
		b = binary.AppendUvarint(b, a.Generation)
		b = wire.AppendString(b, a.Next)
		b = binary.AppendUvarint(b, a.Committed)
		b = wire.AppendParked(b, a.Parked)
	}
	// The skipped counts follow only if one is not zero, so that a group
	// never skipped from is stored as before skips existed.
	if slices.ContainsFunc(g.parts, func(a core.PartitionAssignment) bool { return a.Skipped > 0 }) {
		b = binary.AppendUvarint(b, uint64(len(g.parts)))
		for _, a := range g.parts {
			b = binary.AppendUvarint(b, a.Skipped)
		}
	}
	return b
}

func Decode(b []byte) (*Group, error) {
	d := wire.Decoder{B: b}
	g := &Group{generation: d.Uvarint(), members: map[string]*member{}}
	n := d.Count(3)
	for i := 0; i < n; i++ {
		id := d.Str()
		g.members[id] = &member{session: d.Varint(), lastSeen: d.Varint()}
	}
	n = d.Count(4)
	g.parts = make([]core.PartitionAssignment, n)
	for i := range g.parts {
		g.parts[i] = core.PartitionAssignment{Partition: core.Partition(i), Owner: d.Str(), Generation: d.Uvarint(), Next: d.Str(), Committed: d.Uvarint()}
		g.parts[i].Parked = d.Parked()
	}
	if d.Err == nil && len(d.B) != 0 {
		if d.Count(1) != len(g.parts) {
			d.Fail()
		}
		for i := range g.parts {
			g.parts[i].Skipped = d.Uvarint()
		}
	}
	if d.Err == nil && len(d.B) != 0 {
		d.Fail()
	}
	return g, d.Err
}

func sortedMembers(g *Group) []string {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// State renders g, named name, for readers.
func (g *Group) State(name string) core.GroupState {
	s := core.GroupState{Group: name, Generation: g.generation}
	for _, id := range sortedMembers(g) {
		m := g.members[id]
		s.Members = append(s.Members, core.GroupMember{ID: id, SessionTimeout: time.Duration(m.session), LastSeen: time.Unix(0, m.lastSeen).UTC()})
	}
	s.Partitions = make([]core.PartitionAssignment, len(g.parts))
	for i, a := range g.parts {
		a.Parked = slices.Clone(a.Parked)
		s.Partitions[i] = a
	}
	return s
}

// New is a group with no members over a log of the given number of
// partitions; a join creates it.
func New(partitions int) *Group {
	g := &Group{members: map[string]*member{}, parts: make([]core.PartitionAssignment, partitions)}
	for p := range g.parts {
		g.parts[p].Partition = core.Partition(p)
	}
	return g
}

// Apply applies one operation, named o.Group, at leader time t, to g, the
// group of that name (nil if there is none) in a log of the given number
// of partitions. It returns the outcome and the group as it is after the
// operation: a new one if a join created it, nil if there is none (never
// was, or deleted).
func Apply(g *Group, o *wire.GroupOp, t int64, partitions int) (core.GroupOutcome, *Group) {
	if g == nil {
		switch o.Op {
		case wire.GopJoin:
			g = New(partitions)
		case wire.GopJoinAt:
			if len(o.Offsets) != partitions {
				return core.GroupOutcome{Err: fmt.Errorf("%w: %d start offsets for %d partitions", core.ErrConfig, len(o.Offsets), partitions)}, nil
			}
			g = New(partitions)
			for p, off := range o.Offsets {
				g.parts[p].Committed = off
			}
		case wire.GopDelete:
			return core.GroupOutcome{State: core.GroupState{Group: o.Group}}, nil
		case wire.GopReset, wire.GopForceReset:
			return core.GroupOutcome{Err: fmt.Errorf("%w: %q", core.ErrUnknownGroup, o.Group)}, nil
		default:
			return core.GroupOutcome{Err: fmt.Errorf("%w: group %q has no members", core.ErrUnknownMember, o.Group)}, nil
		}
	}
	out := g.apply(o, t)
	if o.Op == wire.GopDelete && out.Err == nil {
		return core.GroupOutcome{State: core.GroupState{Group: o.Group}}, nil
	}
	return out, g
}

// apply applies o to the group.
func (g *Group) apply(o *wire.GroupOp, t int64) core.GroupOutcome {
	changed := g.expire(t)
	m := g.members[o.Member]
	switch o.Op {
	case wire.GopJoin, wire.GopJoinAt:
		if m == nil {
			g.members[o.Member] = &member{session: o.Session, lastSeen: t}
			changed = true
		} else {
			m.session, m.lastSeen = o.Session, t
		}
	case wire.GopLeave:
		if m != nil {
			delete(g.members, o.Member)
			g.dropOwner(o.Member)
			changed = true
		}
	case wire.GopHeartbeat, wire.GopCommit:
		if m == nil {
			if changed {
				g.rebalance()
			}
			if o.Op == wire.GopCommit && len(o.Commits) > 0 {
				c := o.Commits[0]
				a := g.part(c.Partition)
				return core.GroupOutcome{State: g.State(o.Group), Err: &core.StaleGenerationError{Group: o.Group, Member: o.Member, Partition: c.Partition, Generation: c.Generation, Current: a.Generation, Owner: a.Owner}}
			}
			return core.GroupOutcome{State: g.State(o.Group), Err: fmt.Errorf("%w: %q in group %q", core.ErrUnknownMember, o.Member, o.Group)}
		}
		m.lastSeen = t
		if o.Op == wire.GopHeartbeat {
			for _, p := range o.Release {
				if p >= 0 && int(p) < len(g.parts) && g.parts[p].Owner == o.Member && g.parts[p].Revoking() {
					g.parts[p].Owner = ""
					changed = true
				}
			}
		} else if err := g.commit(o); err != nil {
			if changed {
				g.rebalance()
			}
			return core.GroupOutcome{State: g.State(o.Group), Err: err}
		}
	case wire.GopRetry, wire.GopSkip:
		if o.Partition >= 0 && int(o.Partition) < len(g.parts) {
			for i := range g.parts[o.Partition].Parked {
				if pr := &g.parts[o.Partition].Parked[i]; pr.Offset == o.Offset {
					if o.Op == wire.GopRetry {
						pr.Retry = true
					} else {
						pr.Skip = true
					}
				}
			}
		}
	case wire.GopReset, wire.GopDelete:
		if err := g.idle(o); err != nil {
			if changed {
				g.rebalance()
			}
			return core.GroupOutcome{State: g.State(o.Group), Err: err}
		}
		if o.Op == wire.GopReset {
			g.reset(o.Offsets)
		}
	case wire.GopForceReset:
		if len(o.Offsets) != len(g.parts) {
			if changed {
				g.rebalance()
			}
			return core.GroupOutcome{State: g.State(o.Group), Err: fmt.Errorf("%w: %d offsets for %d partitions", core.ErrConfig, len(o.Offsets), len(g.parts))}
		}
		// Fence the live members: without a membership their commits
		// are stale and their heartbeats unknown, so they join again and
		// are granted the partitions at a new generation, from the new
		// offsets.
		for _, id := range sortedMembers(g) {
			delete(g.members, id)
			g.dropOwner(id)
		}
		g.reset(o.Offsets)
		changed = true
	}
	if changed {
		g.rebalance()
	}
	return core.GroupOutcome{State: g.State(o.Group)}
}

// idle checks that an operator's reset or delete may apply: the group has
// no live member, and a reset names every partition.
func (g *Group) idle(o *wire.GroupOp) error {
	if len(g.members) > 0 {
		return fmt.Errorf("%w: group %q has %d (%s)", core.ErrGroupActive, o.Group, len(g.members), strings.Join(sortedMembers(g), ", "))
	}
	if o.Op == wire.GopReset && len(o.Offsets) != len(g.parts) {
		return fmt.Errorf("%w: %d offsets for %d partitions", core.ErrConfig, len(o.Offsets), len(g.parts))
	}
	return nil
}

// reset moves every partition's committed offset to offsets, forward or
// back. Parked records at or after a partition's new offset are dropped
// (they will be handled again); those before it stay parked. The
// generation increments, so watchers see the change.
func (g *Group) reset(offsets []uint64) {
	for p := range g.parts {
		a := &g.parts[p]
		a.Committed = offsets[p]
		a.Parked = slices.DeleteFunc(a.Parked, func(r core.ParkedRecord) bool { return r.Offset >= a.Committed })
		if len(a.Parked) == 0 {
			a.Parked = nil
		}
	}
	g.generation++
}

func (g *Group) part(p core.Partition) core.PartitionAssignment {
	if p >= 0 && int(p) < len(g.parts) {
		return g.parts[p]
	}
	return core.PartitionAssignment{Partition: p}
}

// expire removes members whose session ended before t.
func (g *Group) expire(t int64) bool {
	changed := false
	for _, id := range sortedMembers(g) {
		m := g.members[id]
		if m.lastSeen+m.session < t {
			delete(g.members, id)
			g.dropOwner(id)
			changed = true
		}
	}
	return changed
}

// dropOwner frees the partitions of a member that left or expired.
func (g *Group) dropOwner(id string) {
	for i := range g.parts {
		a := &g.parts[i]
		if a.Owner == id {
			a.Owner = ""
		}
		if a.Next == id {
			a.Next = ""
		}
	}
}

// commit checks every commit of o against the owners, then applies them
// all; a stale one, or one below its partition's committed offset,
// rejects the whole operation.
func (g *Group) commit(o *wire.GroupOp) error {
	for _, c := range o.Commits {
		a := g.part(c.Partition)
		if c.Partition < 0 || int(c.Partition) >= len(g.parts) || a.Owner != o.Member || a.Generation != c.Generation {
			return &core.StaleGenerationError{Group: o.Group, Member: o.Member, Partition: c.Partition, Generation: c.Generation, Current: a.Generation, Owner: a.Owner}
		}
		if c.Offset < a.Committed {
			return fmt.Errorf("%w: group %q, partition %d: offset %d is below the committed %d", core.ErrCommitBehind, o.Group, c.Partition, c.Offset, a.Committed)
		}
	}
	for _, c := range o.Commits {
		a := &g.parts[c.Partition]
		a.Committed = c.Offset
		if len(c.Unpark) > 0 {
			a.Parked = slices.DeleteFunc(a.Parked, func(p core.ParkedRecord) bool {
				if !slices.Contains(c.Unpark, p.Offset) {
					return false
				}
				if p.Skip {
					a.Skipped++
				}
				return true
			})
			if len(a.Parked) == 0 {
				a.Parked = nil
			}
		}
		for _, p := range c.Park {
			i, found := slices.BinarySearchFunc(a.Parked, p.Offset, func(x core.ParkedRecord, off uint64) int { return cmp.Compare(x.Offset, off) })
			if found {
				a.Parked[i] = p
			} else {
				a.Parked = slices.Insert(a.Parked, i, p)
			}
		}
	}
	return nil
}

// rebalance computes the balanced, sticky target of every partition and
// moves toward it: free partitions are granted at once, owned ones are
// marked to move (Next) and move when released. The generation
// increments if any owner or target changed.
func (g *Group) rebalance() {
	ids := sortedMembers(g)
	target := assign(ids, g.parts)
	changed := false
	for i := range g.parts {
		a := &g.parts[i]
		next := target[i]
		if a.Owner == "" {
			if next != "" {
				a.Owner, a.Next = next, ""
				a.Generation = g.generation + 1
				changed = true
			} else if a.Next != "" {
				a.Next = ""
				changed = true
			}
			continue
		}
		want := ""
		if next != a.Owner {
			want = next
		}
		if a.Next != want {
			a.Next = want
			changed = true
		}
	}
	if changed {
		g.generation++
	}
}

// assign gives each partition a member: balanced (counts differ by at
// most one) and sticky (a partition stays with its current holder, the
// member it is owned by or moving to, while the holder is under quota).
func assign(ids []string, parts []core.PartitionAssignment) []string {
	target := make([]string, len(parts))
	if len(ids) == 0 {
		return target
	}
	holder := func(a core.PartitionAssignment) string {
		if a.Next != "" {
			return a.Next
		}
		return a.Owner
	}
	count := map[string]int{}
	isMember := map[string]bool{}
	for _, id := range ids {
		isMember[id] = true
	}
	for _, a := range parts {
		if h := holder(a); isMember[h] {
			count[h]++
		}
	}
	// Members holding the most get the extra partitions, so fewer move.
	order := slices.Clone(ids)
	slices.SortStableFunc(order, func(a, b string) int { return cmp.Compare(count[b], count[a]) })
	base, extra := len(parts)/len(ids), len(parts)%len(ids)
	quota := map[string]int{}
	for i, id := range order {
		quota[id] = base
		if i < extra {
			quota[id]++
		}
	}
	kept := map[string]int{}
	for i, a := range parts {
		if h := holder(a); isMember[h] && kept[h] < quota[h] {
			target[i] = h
			kept[h]++
		}
	}
	for i := range parts {
		if target[i] != "" {
			continue
		}
		for _, id := range ids {
			if kept[id] < quota[id] {
				target[i] = id
				kept[id]++
				break
			}
		}
	}
	return target
}

// FromState is the group a reader's view s describes (the inverse of
// State), so that a state can travel in the stored encoding.
func FromState(s *core.GroupState) *Group {
	g := &Group{generation: s.Generation, members: map[string]*member{}, parts: s.Partitions}
	for _, m := range s.Members {
		g.members[m.ID] = &member{session: int64(m.SessionTimeout), lastSeen: m.LastSeen.UnixNano()}
	}
	return g
}
