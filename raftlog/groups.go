package raftlog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Consumer groups.
//
// A consumer group shares the partitions of the log among its members,
// each partition processed by one member at a time. Membership,
// generation, assignment and committed offsets are state of raft group
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

// Errors of consumer groups.
var (
	// ErrUnknownMember: the member is not in the group (never joined, left,
	// or its session expired); it must join again.
	ErrUnknownMember = errors.New("raftlog: unknown group member")
)

// StaleGenerationError rejects a commit from a member that no longer owns
// the partition at the generation it names. Nothing of the commit was
// applied.
type StaleGenerationError struct {
	Group, Member string
	Partition     int
	Generation    uint64 // the generation the commit carried
	Current       uint64 // the partition's grant generation now
	Owner         string // the partition's owner now
}

func (e *StaleGenerationError) Error() string {
	return fmt.Sprintf("raftlog: group %q: member %q committed partition %d at generation %d; it is owned by %q at generation %d",
		e.Group, e.Member, e.Partition, e.Generation, e.Owner, e.Current)
}

// GroupState is a consumer group as a node has applied it.
type GroupState struct {
	Group string
	// Generation increments on every change of membership or ownership.
	Generation uint64
	Members    []GroupMember // by ID
	Partitions []PartitionAssignment
}

// GroupMember is a member of a consumer group.
type GroupMember struct {
	ID             string
	SessionTimeout time.Duration
	LastSeen       time.Time // leader time of its last operation
}

// PartitionAssignment is one partition of a consumer group.
type PartitionAssignment struct {
	Partition int
	// Owner is the member processing the partition, "" if none.
	Owner string
	// Generation is the group generation at which Owner was granted the
	// partition; commits must carry it.
	Generation uint64
	// Next, when not Owner, is the member the partition moves to once
	// Owner releases it.
	Next string
	// Committed is the offset to resume from.
	Committed uint64
	// Parked are records set aside after failing, in offset order.
	Parked []ParkedRecord
}

// Revoking reports whether the partition's owner must release it.
func (a PartitionAssignment) Revoking() bool { return a.Next != "" && a.Next != a.Owner }

// ParkedRecord is a record a handler failed on repeatedly, set aside so
// the partition can go on; records of the same key after it are parked
// behind it, to keep the key's order.
type ParkedRecord struct {
	Offset   uint64
	Key      string
	Error    string
	Attempts int
	// Retry is set by RetryParked: the owner should handle the record (and
	// those parked behind it) again.
	Retry bool
}

// OffsetCommit is one partition's progress in a commit.
type OffsetCommit struct {
	Partition  int
	Generation uint64 // the generation of the member's grant
	Offset     uint64 // the next offset to process
	Park       []ParkedRecord
	Unpark     []uint64 // offsets of parked records now handled
}

// Lag returns, per partition, how many records the group has yet to
// process on this node's replica (head offset minus committed offset).
func (l *Log) Lag(s GroupState) []uint64 {
	lag := make([]uint64, len(s.Partitions))
	for i, a := range s.Partitions {
		if head, err := l.NextOffset(a.Partition); err == nil && head > a.Committed {
			lag[i] = head - a.Committed
		}
	}
	return lag
}

// Group operations.
const (
	gopJoin      byte = 1
	gopHeartbeat byte = 2
	gopLeave     byte = 3
	gopCommit    byte = 4
	gopRetry     byte = 5
)

// groupOp is one operation on a consumer group, as carried in a raft entry
// of type cmdGroup.
type groupOp struct {
	Op        byte
	Group     string
	Member    string
	Session   int64          // join: nanoseconds
	Release   []int          // heartbeat: partitions released
	Commits   []OffsetCommit // commit
	Partition int            // retry
	Offset    uint64         // retry
}

func encodeGroupOp(b []byte, o *groupOp) []byte {
	b = append(b, o.Op)
	b = appendString(b, o.Group)
	b = appendString(b, o.Member)
	switch o.Op {
	case gopJoin:
		b = binary.AppendUvarint(b, uint64(o.Session))
	case gopHeartbeat:
		b = binary.AppendUvarint(b, uint64(len(o.Release)))
		for _, p := range o.Release {
			b = binary.AppendUvarint(b, uint64(p))
		}
	case gopCommit:
		b = binary.AppendUvarint(b, uint64(len(o.Commits)))
		for _, c := range o.Commits {
			b = binary.AppendUvarint(b, uint64(c.Partition))
			b = binary.AppendUvarint(b, c.Generation)
			b = binary.AppendUvarint(b, c.Offset)
			b = appendParked(b, c.Park)
			b = binary.AppendUvarint(b, uint64(len(c.Unpark)))
			for _, off := range c.Unpark {
				b = binary.AppendUvarint(b, off)
			}
		}
	case gopRetry:
		b = binary.AppendUvarint(b, uint64(o.Partition))
		b = binary.AppendUvarint(b, o.Offset)
	}
	return b
}

func appendParked(b []byte, ps []ParkedRecord) []byte {
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = binary.AppendUvarint(b, p.Offset)
		b = appendString(b, p.Key)
		b = appendString(b, p.Error)
		b = binary.AppendUvarint(b, uint64(p.Attempts))
		if p.Retry {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

func (d *decoder) parked() []ParkedRecord {
	n := d.count(5)
	if n == 0 {
		return nil
	}
	ps := make([]ParkedRecord, n)
	for i := range ps {
		ps[i] = ParkedRecord{Offset: d.uvarint(), Key: d.string(), Error: d.string(), Attempts: int(d.uvarint()), Retry: d.byte() == 1}
	}
	return ps
}

func (d *decoder) groupOp() groupOp {
	o := groupOp{Op: d.byte(), Group: d.string(), Member: d.string()}
	switch o.Op {
	case gopJoin:
		o.Session = int64(d.uvarint())
	case gopHeartbeat:
		n := d.count(1)
		for i := 0; i < n; i++ {
			o.Release = append(o.Release, int(d.uvarint()))
		}
	case gopCommit:
		n := d.count(4)
		for i := 0; i < n; i++ {
			c := OffsetCommit{Partition: int(d.uvarint()), Generation: d.uvarint(), Offset: d.uvarint()}
			c.Park = d.parked()
			m := d.count(1)
			for j := 0; j < m; j++ {
				c.Unpark = append(c.Unpark, d.uvarint())
			}
			o.Commits = append(o.Commits, c)
		}
	case gopLeave:
	case gopRetry:
		o.Partition, o.Offset = int(d.uvarint()), d.uvarint()
	default:
		d.fail()
	}
	return o
}

// cgroup is a consumer group's state in the FSM.
type cgroup struct {
	generation uint64
	members    map[string]*cmember
	parts      []PartitionAssignment
}

type cmember struct {
	session  int64
	lastSeen int64
}

// encodeCGroup is the stored form of a group (bucket "cg", key: its name).
func encodeCGroup(b []byte, g *cgroup) []byte {
	b = binary.AppendUvarint(b, g.generation)
	ids := sortedMembers(g)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		m := g.members[id]
		b = appendString(b, id)
		b = binary.AppendVarint(b, m.session)
		b = binary.AppendVarint(b, m.lastSeen)
	}
	b = binary.AppendUvarint(b, uint64(len(g.parts)))
	for _, a := range g.parts {
		b = appendString(b, a.Owner)
		b = binary.AppendUvarint(b, a.Generation)
		b = appendString(b, a.Next)
		b = binary.AppendUvarint(b, a.Committed)
		b = appendParked(b, a.Parked)
	}
	return b
}

func decodeCGroup(b []byte) (*cgroup, error) {
	d := decoder{b: b}
	g := &cgroup{generation: d.uvarint(), members: map[string]*cmember{}}
	n := d.count(3)
	for i := 0; i < n; i++ {
		id := d.string()
		g.members[id] = &cmember{session: d.varint(), lastSeen: d.varint()}
	}
	n = d.count(4)
	g.parts = make([]PartitionAssignment, n)
	for i := range g.parts {
		g.parts[i] = PartitionAssignment{Partition: i, Owner: d.string(), Generation: d.uvarint(), Next: d.string(), Committed: d.uvarint()}
		g.parts[i].Parked = d.parked()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return g, d.err
}

func sortedMembers(g *cgroup) []string {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// state renders g for readers.
func (g *cgroup) state(name string) GroupState {
	s := GroupState{Group: name, Generation: g.generation}
	for _, id := range sortedMembers(g) {
		m := g.members[id]
		s.Members = append(s.Members, GroupMember{ID: id, SessionTimeout: time.Duration(m.session), LastSeen: time.Unix(0, m.lastSeen).UTC()})
	}
	s.Partitions = make([]PartitionAssignment, len(g.parts))
	for i, a := range g.parts {
		a.Parked = slices.Clone(a.Parked)
		s.Partitions[i] = a
	}
	return s
}

// groupOutcome is the FSM's answer to a group operation.
type groupOutcome struct {
	State GroupState
	Err   error
}

// applyGroup applies one group operation at leader time t. It runs on the
// FSM goroutine; f.mu guards the groups against readers.
func (f *fsm) applyGroup(o *groupOp, t int64) groupOutcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.cgroups[o.Group]
	if g == nil {
		if o.Op != gopJoin {
			return groupOutcome{Err: fmt.Errorf("%w: group %q has no members", ErrUnknownMember, o.Group)}
		}
		g = &cgroup{members: map[string]*cmember{}, parts: make([]PartitionAssignment, f.totalPartitions)}
		for p := range g.parts {
			g.parts[p].Partition = p
		}
		f.cgroups[o.Group] = g
	}
	f.mem.groupsDirty[o.Group] = struct{}{}
	changed := g.expire(t)
	m := g.members[o.Member]
	switch o.Op {
	case gopJoin:
		if m == nil {
			g.members[o.Member] = &cmember{session: o.Session, lastSeen: t}
			changed = true
		} else {
			m.session, m.lastSeen = o.Session, t
		}
	case gopLeave:
		if m != nil {
			delete(g.members, o.Member)
			g.dropOwner(o.Member)
			changed = true
		}
	case gopHeartbeat, gopCommit:
		if m == nil {
			if changed {
				g.rebalance()
			}
			if o.Op == gopCommit && len(o.Commits) > 0 {
				c := o.Commits[0]
				a := g.part(c.Partition)
				return groupOutcome{State: g.state(o.Group), Err: &StaleGenerationError{Group: o.Group, Member: o.Member, Partition: c.Partition, Generation: c.Generation, Current: a.Generation, Owner: a.Owner}}
			}
			return groupOutcome{State: g.state(o.Group), Err: fmt.Errorf("%w: %q in group %q", ErrUnknownMember, o.Member, o.Group)}
		}
		m.lastSeen = t
		if o.Op == gopHeartbeat {
			for _, p := range o.Release {
				if p >= 0 && p < len(g.parts) && g.parts[p].Owner == o.Member && g.parts[p].Revoking() {
					g.parts[p].Owner = ""
					changed = true
				}
			}
		} else if err := g.commit(o); err != nil {
			if changed {
				g.rebalance()
			}
			return groupOutcome{State: g.state(o.Group), Err: err}
		}
	case gopRetry:
		if o.Partition >= 0 && o.Partition < len(g.parts) {
			for i := range g.parts[o.Partition].Parked {
				if g.parts[o.Partition].Parked[i].Offset == o.Offset {
					g.parts[o.Partition].Parked[i].Retry = true
				}
			}
		}
	}
	if changed {
		g.rebalance()
	}
	return groupOutcome{State: g.state(o.Group)}
}

func (g *cgroup) part(p int) PartitionAssignment {
	if p >= 0 && p < len(g.parts) {
		return g.parts[p]
	}
	return PartitionAssignment{Partition: p}
}

// expire removes members whose session ended before t.
func (g *cgroup) expire(t int64) bool {
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
func (g *cgroup) dropOwner(id string) {
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
// all; a stale one rejects the whole operation.
func (g *cgroup) commit(o *groupOp) error {
	for _, c := range o.Commits {
		a := g.part(c.Partition)
		if c.Partition < 0 || c.Partition >= len(g.parts) || a.Owner != o.Member || a.Generation != c.Generation {
			return &StaleGenerationError{Group: o.Group, Member: o.Member, Partition: c.Partition, Generation: c.Generation, Current: a.Generation, Owner: a.Owner}
		}
	}
	for _, c := range o.Commits {
		a := &g.parts[c.Partition]
		a.Committed = max(a.Committed, c.Offset)
		if len(c.Unpark) > 0 {
			a.Parked = slices.DeleteFunc(a.Parked, func(p ParkedRecord) bool { return slices.Contains(c.Unpark, p.Offset) })
			if len(a.Parked) == 0 {
				a.Parked = nil
			}
		}
		for _, p := range c.Park {
			i, found := slices.BinarySearchFunc(a.Parked, p.Offset, func(x ParkedRecord, off uint64) int { return cmp.Compare(x.Offset, off) })
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
func (g *cgroup) rebalance() {
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
func assign(ids []string, parts []PartitionAssignment) []string {
	target := make([]string, len(parts))
	if len(ids) == 0 {
		return target
	}
	holder := func(a PartitionAssignment) string {
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

// groupState returns a consumer group as applied on this node.
func (f *fsm) groupState(name string) (GroupState, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	g := f.cgroups[name]
	if g == nil {
		return GroupState{}, false
	}
	return g.state(name), true
}

// loadGroups reads the consumer groups from tx.
func (f *fsm) loadGroups(tx *bolt.Tx) error {
	f.cgroups = map[string]*cgroup{}
	b := tx.Bucket(bucketGroups)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		g, err := decodeCGroup(v)
		if err != nil {
			return fmt.Errorf("raftlog: consumer group %q: %w", k, err)
		}
		f.cgroups[string(k)] = g
		return nil
	})
}

// flushGroups writes the consumer groups a table changed, encoded as of
// its last index, into tx.
func flushGroups(tx *bolt.Tx, groups map[string][]byte) error {
	if len(groups) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketGroups)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(groups))
	for n := range groups {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		errs = append(errs, b.Put([]byte(n), groups[n]))
	}
	return errors.Join(errs...)
}
