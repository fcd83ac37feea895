package route

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/wire"
)

// NodeState is what a node says of itself when probed (MethodProbe): the
// answer a node with no data uses to decide between forming a cluster and
// rejoining one. It is answered by the node itself, never forwarded.
type NodeState struct {
	NodeID string
	// ClusterID is the identity of the cluster this node belongs to, "" if
	// it has not learned one yet.
	ClusterID string
	// HasState: some shard of this node has raft state (a log, a snapshot
	// or a term). A node without it has not started raft yet.
	HasState bool
	// Incarnation is a random token of a node with no state, new each
	// time it starts; FormedWith, on a node that formed the cluster, the
	// incarnations of the empty peers it counted.
	Incarnation string
	FormedWith  map[string]string
	// Members are the IDs in shard 0's latest raft configuration as this
	// node knows it.
	Members []string
	Shards  []ShardState
}

// ShardState is one shard of a probed node.
type ShardState struct {
	LastIndex   uint64
	CommitIndex uint64
	Applied     uint64 // raft's applied index (no-ops and configurations included)
	LeaderID    string // "" if the node knows no leader
}

func encodeNodeState(st NodeState) []byte {
	b := wire.AppendString(nil, st.NodeID)
	b = wire.AppendString(b, st.ClusterID)
	b = appendBool(b, st.HasState)
	b = wire.AppendString(b, st.Incarnation)
	ids := make([]string, 0, len(st.FormedWith))
	for id := range st.FormedWith {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = wire.AppendString(wire.AppendString(b, id), st.FormedWith[id])
	}
	b = binary.AppendUvarint(b, uint64(len(st.Members)))
	for _, m := range st.Members {
		b = wire.AppendString(b, m)
	}
	b = binary.AppendUvarint(b, uint64(len(st.Shards)))
	for _, s := range st.Shards {
		b = binary.AppendUvarint(b, s.LastIndex)
		b = binary.AppendUvarint(b, s.CommitIndex)
		b = binary.AppendUvarint(b, s.Applied)
		b = wire.AppendString(b, s.LeaderID)
	}
	return b
}

func decodeNodeState(b []byte) (NodeState, error) {
	d := wire.Decoder{B: b}
	var st NodeState
	st.NodeID, st.ClusterID, st.HasState = d.Str(), d.Str(), d.Byte() == 1
	st.Incarnation = d.Str()
	for n := d.Count(2); n > 0 && d.Err == nil; n-- {
		if st.FormedWith == nil {
			st.FormedWith = map[string]string{}
		}
		id := d.Str()
		st.FormedWith[id] = d.Str()
	}
	for n := d.Count(1); n > 0 && d.Err == nil; n-- {
		st.Members = append(st.Members, d.Str())
	}
	for n := d.Count(4); n > 0 && d.Err == nil; n-- {
		st.Shards = append(st.Shards, ShardState{LastIndex: d.Uvarint(), CommitIndex: d.Uvarint(), Applied: d.Uvarint(), LeaderID: d.Str()})
	}
	if err := d.Finish(); err != nil {
		return NodeState{}, fmt.Errorf("raftlog: undecodable probe reply: %w", err)
	}
	return st, nil
}

// Probe asks the node at addr for its state.
func (r *Router) Probe(ctx context.Context, addr string) (NodeState, error) {
	resp, err := r.client.Call(ctx, addr, MethodProbe, nil)
	if err != nil {
		return NodeState{}, err
	}
	return decodeNodeState(resp)
}

// Probed is one node's answer to ProbeAll.
type Probed struct {
	State NodeState
	Err   error
}

// ProbeAll probes every address at once, each within timeout, and returns
// the answers in the same order; an empty address is skipped (its answer
// is zero).
func (r *Router) ProbeAll(ctx context.Context, addrs []string, timeout time.Duration) []Probed {
	out := make([]Probed, len(addrs))
	askAll(ctx, addrs, timeout, func(ctx context.Context, i int, addr string) {
		out[i].State, out[i].Err = r.Probe(ctx, addr)
	})
	return out
}

// askAll runs ask for every address at once, each with ctx bounded by
// timeout, and returns when all have; an empty address is skipped.
func askAll(ctx context.Context, addrs []string, timeout time.Duration, ask func(ctx context.Context, i int, addr string)) {
	var wg sync.WaitGroup
	for i, addr := range addrs {
		if addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			ask(actx, i, addr)
		}()
	}
	wg.Wait()
}

// rejoinTimeout bounds the membership changes one MethodRejoin call runs on
// the node that received it: the caller retries, and logs each failure.
const rejoinTimeout = 10 * time.Second

// Rejoin asks the node at addr to make node id, reachable at advertise, a
// non-voter of every shard, demoting it first where it is a voter. It is
// one attempt: the caller retries.
func (r *Router) Rejoin(ctx context.Context, addr, id, advertise string) error {
	payload := wire.AppendString(nil, id)
	payload = wire.AppendString(payload, advertise)
	_, err := r.client.Call(ctx, addr, MethodRejoin, payload)
	return err
}

func (r *Router) serveRejoin(ctx context.Context, payload []byte) error {
	id, addr, err := decodeRejoin(payload)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, rejoinTimeout)
	defer cancel()
	return r.ChangeMembership(ctx, OpRejoin, id, addr)
}

// Promote makes node id a voter of shard s (raft AddVoter on its leader).
func (r *Router) Promote(ctx context.Context, s *Shard, id, addr string) error {
	return r.changeShardMembership(ctx, s, OpAddVoter, id, addr)
}

// rejoinMembership runs OpRejoin on s's leader: a voter with id is demoted
// first, so that the node, which lost its log, never counts toward a
// quorum again before it has caught up; then it is (re)added as a
// non-voter at addr, which also updates its address.
func rejoinMembership(s *Shard, id, addr string) raft.IndexFuture {
	cf := s.Raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return errorFuture{err}
	}
	for _, srv := range cf.Configuration().Servers {
		if srv.ID == raft.ServerID(id) && srv.Suffrage == raft.Voter {
			if err := s.Raft.DemoteVoter(srv.ID, 0, 0).Error(); err != nil {
				return errorFuture{err}
			}
		}
	}
	return s.Raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
}

type errorFuture struct{ err error }

func (f errorFuture) Error() error  { return f.err }
func (f errorFuture) Index() uint64 { return 0 }
