package raftlog

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/state"
)

// ListedKey is one key as ListKeys lists it.
type ListedKey = core.ListedKey

// MaxListKeys bounds one ListKeys page.
const MaxListKeys = 1000

// KeyBefore reports whether key a comes before key b in the order
// ListKeys lists keys: shorter keys first, then bytewise, so that
// "order-9" comes before "order-10".
func KeyBefore(a, b string) bool { return state.KeyBefore(a, b) }

// ListKeys returns up to limit (at most MaxListKeys) keys that start with
// prefix and come after the key after ("" for the first page), over every
// partition, in KeyBefore order, as this replica has applied them. It
// reads each partition's key index, never the records, so a page costs
// about one index seek per key and per key length in use, whatever the
// history. To page, pass the last key of a page as after. A key appended
// to several partitions (ToPartition) is listed for one of them per page
// boundary only.
func (l *Log) ListKeys(ctx context.Context, prefix, after string, limit int) ([]ListedKey, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	limit = min(max(limit, 1), MaxListKeys)
	var out []ListedKey
	for p := Partition(0); int(p) < l.cfg.Partitions; p++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, _ := l.shardOf(p)
		keys, err := s.engine.Keys(p, prefix, after, limit)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			out = append(out, ListedKey{Key: k.Key, Partition: p, Seq: k.Seq, Deleted: k.Deleted})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return KeyBefore(out[i].Key, out[j].Key)
		}
		return out[i].Partition < out[j].Partition
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// GroupNames returns the names of the consumer groups as this node has
// applied them, sorted.
func (l *Log) GroupNames() ([]string, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	return l.shards[0].engine.GroupNames(), nil
}

// MemberState is one member of the cluster as MemberStates found it.
type MemberState struct {
	ID    string
	Addr  string
	Voter bool // a voter of every shard
	// Reachable: it answered a probe (this node always does). Err is why
	// not.
	Reachable bool
	Err       error
	// Shards are its raft indexes per shard (empty if unreachable).
	Shards []MemberShard
}

// MemberShard is one shard of a probed member.
type MemberShard struct {
	LeaderID    string // the leader it knows, "" if none
	LastIndex   uint64
	CommitIndex uint64
	// AppliedIndex is raft's applied index on it (no-op and configuration
	// entries included, unlike ShardStatus.AppliedIndex).
	AppliedIndex uint64
}

// MemberStates probes every member of the cluster (the servers of every
// shard's configuration as this node knows them) at once, each within
// timeout, and returns them sorted by ID.
func (l *Log) MemberStates(ctx context.Context, timeout time.Duration) ([]MemberState, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	byID := map[string]*MemberState{}
	for i, s := range l.shards {
		f := s.Raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		for _, srv := range f.Configuration().Servers {
			m := byID[string(srv.ID)]
			if m == nil {
				m = &MemberState{ID: string(srv.ID), Addr: string(srv.Address), Voter: true}
				byID[m.ID] = m
			}
			// A voter in one shard and not in another (mid-change) is not
			// a voter of the cluster yet.
			m.Voter = m.Voter && srv.Suffrage == raft.Voter
			if i == 0 {
				m.Addr = string(srv.Address)
			}
		}
	}
	var out []MemberState
	var addrs []string
	for _, m := range byID {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	for i := range out {
		if out[i].ID == l.cfg.NodeID {
			addrs = append(addrs, "")
			continue
		}
		addrs = append(addrs, out[i].Addr)
	}
	answers := l.router.ProbeAll(ctx, addrs, timeout)
	for i := range out {
		st, err := answers[i].State, answers[i].Err
		if out[i].ID == l.cfg.NodeID {
			st, err = l.probeState(), nil
		}
		switch {
		case err != nil:
			out[i].Err = err
		case st.NodeID != out[i].ID:
			out[i].Err = fmt.Errorf("raftlog: %s answers as node %q", out[i].Addr, st.NodeID)
		default:
			out[i].Reachable = true
			for _, s := range st.Shards {
				out[i].Shards = append(out[i].Shards, MemberShard{LeaderID: s.LeaderID, LastIndex: s.LastIndex, CommitIndex: s.CommitIndex, AppliedIndex: s.Applied})
			}
		}
	}
	return out, nil
}

// Rebalance moves leadership of the shards this node leads beyond its
// share (ceil(shards / voters)) to the voters that lead the fewest, one at
// a time, as the background balancer does every BalanceInterval, and
// returns how many it moved. Run it on the node that leads too many: a
// node never moves leaders it does not hold.
func (l *Log) Rebalance(ctx context.Context) (int, error) {
	if l.isClosed() {
		return 0, ErrClosed
	}
	moved := 0
	for range l.shards {
		if !l.balanceOnce(ctx, ctx.Done()) {
			break
		}
		moved++ // the transfer's future resolves once this node stepped down
	}
	return moved, ctx.Err()
}
