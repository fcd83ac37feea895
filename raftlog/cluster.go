package raftlog

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/route"
)

// AddVoter adds (or re-addresses) a voter in every shard. The node must be
// running with the same Partitions and Groups, reachable at addr.
func (l *Log) AddVoter(ctx context.Context, id, addr string) error {
	return l.changeMembership(ctx, route.OpAddVoter, id, addr)
}

// AddNonvoter adds a non-voting replica to every shard: it receives every
// entry and serves reads but does not count toward a quorum.
func (l *Log) AddNonvoter(ctx context.Context, id, addr string) error {
	return l.changeMembership(ctx, route.OpAddNonvoter, id, addr)
}

// RemoveServer removes a node from every shard.
func (l *Log) RemoveServer(ctx context.Context, id string) error {
	return l.changeMembership(ctx, route.OpRemove, id, "")
}

func (l *Log) changeMembership(ctx context.Context, op byte, id, addr string) error {
	if id == "" || (op != route.OpRemove && addr == "") {
		return fmt.Errorf("%w: membership change needs a node ID and an address", ErrConfig)
	}
	return l.router.ChangeMembership(ctx, op, id, addr)
}

// TransferLeadership asks shard s's leader to hand leadership to node id
// (any up-to-date voter if id is empty). It must run on the current leader.
func (l *Log) TransferLeadership(s Shard, id string) error {
	sh, err := l.shard(s)
	if err != nil {
		return err
	}
	r := sh.Raft
	var f raft.Future
	if id == "" {
		f = r.LeadershipTransfer()
	} else {
		var addr raft.ServerAddress
		cf := r.GetConfiguration()
		if err := cf.Error(); err != nil {
			return err
		}
		for _, s := range cf.Configuration().Servers {
			if s.ID == raft.ServerID(id) {
				addr = s.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %q is not a member of shard %d", ErrConfig, id, s)
		}
		f = r.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("raftlog: transfer leadership of shard %d: %w", s, err)
	}
	return nil
}

// Status describes this node's view of the log.
type Status struct {
	NodeID string
	Addr   string
	// ClusterID is the identity of the cluster this node belongs to (see
	// Log.ClusterID), "" until the node has learned it.
	ClusterID  string
	Shards     []ShardStatus
	Partitions []PartitionStatus
}

// ShardStatus is one shard (raft group) as this node sees it.
type ShardStatus struct {
	Shard        Shard
	State        string // Leader, Follower, Candidate, Shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64 // last entry applied to this node's state (raft's no-op entries never are)
	LastIndex    uint64
	Servers      []ServerStatus
	// Damage describes the first damage found in this node's state files
	// of the shard (a failed checksum, a truncated or unreadable file),
	// "" while none was. A damaged replica serves no record of the damaged
	// range; repair it by wiping its data directory and restarting it with
	// the same command (it rejoins and receives a full copy).
	Damage string
	// FlushError is the error of the last attempt to write the shard's
	// state while such writes fail (a full disk), "" once one succeeds.
	FlushError string
}

// ServerStatus is a member of a shard.
type ServerStatus struct {
	ID    string
	Addr  string
	Voter bool
}

// PartitionStatus is one partition on this replica.
type PartitionStatus struct {
	Partition  Partition
	Shard      Shard
	NextOffset uint64
}

// Status reports each shard's leader, term and indexes and each
// partition's next offset, as this node sees them.
func (l *Log) Status() Status {
	s := Status{NodeID: l.cfg.NodeID, Addr: l.advertise, ClusterID: l.ClusterID()}
	for _, sh := range l.shards {
		addr, id := sh.Raft.LeaderWithID()
		gs := ShardStatus{
			Shard: sh.ID, State: sh.Raft.State().String(), LeaderID: string(id), LeaderAddr: string(addr),
			Term: sh.Raft.CurrentTerm(), CommitIndex: sh.Raft.CommitIndex(), AppliedIndex: sh.engine.Applied(),
			LastIndex: sh.Raft.LastIndex(),
		}
		if err := sh.engine.Damage(); err != nil {
			gs.Damage = err.Error()
		}
		if err := sh.engine.FlushError(); err != nil {
			gs.FlushError = err.Error()
		}
		if cf := sh.Raft.GetConfiguration(); cf.Error() == nil {
			for _, srv := range cf.Configuration().Servers {
				gs.Servers = append(gs.Servers, ServerStatus{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
			}
		}
		s.Shards = append(s.Shards, gs)
	}
	for p := Partition(0); int(p) < l.cfg.Partitions; p++ {
		next, _ := l.NextOffset(p)
		s.Partitions = append(s.Partitions, PartitionStatus{Partition: p, Shard: l.ShardOf(p), NextOffset: next})
	}
	return s
}
