package raftlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/raftlog/internal/route"
)

// How a node begins (DESIGN.md, "Bootstrap, identity and rejoin"): a node
// with raft state starts its shards at once. A node without state never
// runs raft until it knows it may: with Peers it probes them and forms the
// cluster only if none has state and a majority of the voters (itself
// included) answered; if a cluster exists (or with Join) it asks the
// cluster to demote its ID and add it as a non-voter, then starts raft
// with an empty log and no configuration, catches up, and is promoted.

const (
	// probeTimeout bounds one probe of one peer.
	probeTimeout = 2 * time.Second
	// rejoinAttempt bounds one attempt to be re-added through one peer.
	rejoinAttempt = 15 * time.Second
	// promoteLag is how many raft entries behind the leader's commit index
	// a rejoined node may be when it is promoted to voter.
	promoteLag = 16
	// formationGrace is how long a node with no data waits for every peer
	// to answer "no data" before it forms the cluster with a bare majority.
	// A voter the formation did not count rejoins as a new incarnation
	// (demoted, caught up, promoted), and until it is promoted the cluster
	// survives no other failure: nodes started together should all be
	// counted, and a node that is down still does not hold up the
	// formation for long (the grace plus the probe round in progress:
	// about 4 s with a peer whose probe times out).
	formationGrace = 3 * time.Second
)

// startPolicy paces probes and rejoin attempts.
var startPolicy = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// startState is what a node that has not started raft yet says of itself
// to probes: its incarnation (a random token of this process's attempt to
// start with no data) and, once it decided to form the cluster, the
// incarnations of the peers it counted.
type startState struct {
	mu          sync.Mutex
	incarnation string
	started     bool              // every shard's raft runs
	formedWith  map[string]string // peer ID -> the incarnation counted when forming
}

// start decides how this node's shards begin and starts their raft
// instances.
func (l *Log) start(ctx context.Context, logger hclog.Logger) error {
	hasState := false
	for _, s := range l.shards {
		hasState = hasState || s.hasState
	}
	var tok [16]byte
	rand.Read(tok[:])
	l.startState.mu.Lock()
	l.startState.incarnation = hex.EncodeToString(tok[:])
	l.startState.mu.Unlock()

	cfg := l.cfg
	var servers []raft.Server // the bootstrap configuration of a shard with no state
	var via []string          // rejoin through these nodes
	switch {
	case l.mux == nil || (len(cfg.Peers) == 0 && cfg.Join == ""):
		servers = []raft.Server{{ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(l.selfAddr()), Suffrage: raft.Voter}}
	case hasState:
		// A node with data never starts raft among another cluster's
		// nodes (clusterid.go).
		if err := l.checkPeersClusterID(ctx); err != nil {
			return err
		}
		// Shards without state on a node with state were not bootstrapped
		// when the node first started (it stopped in between): they are
		// bootstrapped as they would have been.
		servers = peerServers(cfg.Peers)
	case cfg.Join != "":
		if err := l.checkJoinClusterID(ctx); err != nil {
			return err
		}
		via = []string{cfg.Join}
	default:
		var err error
		if via, err = l.findCluster(ctx); err != nil {
			return err
		}
		if via == nil {
			servers = peerServers(cfg.Peers)
		}
	}
	if via != nil {
		if err := l.rejoin(ctx, via); err != nil {
			return err
		}
		servers = nil
	}
	for _, s := range l.shards {
		if err := l.startShard(s, servers, logger); err != nil {
			return err
		}
	}
	l.startState.mu.Lock()
	l.startState.started = true
	l.startState.mu.Unlock()
	if via != nil && !cfg.NonVoter && !cfg.ManualPromotion {
		l.goRun(l.promoteWhenCaughtUp)
	}
	return nil
}

func (l *Log) selfAddr() string {
	if l.mux == nil {
		return "local:" + l.cfg.NodeID
	}
	return l.advertise
}

func peerServers(peers []Peer) []raft.Server {
	var servers []raft.Server
	for _, p := range peers {
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
	}
	return servers
}

// probeState answers MethodProbe.
func (l *Log) probeState() route.NodeState {
	ss := &l.startState
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := route.NodeState{NodeID: l.cfg.NodeID, ClusterID: l.ClusterID()}
	if !ss.started {
		for _, s := range l.shards {
			st.HasState = st.HasState || s.hasState
		}
		if !st.HasState {
			st.Incarnation = ss.incarnation
		}
		return st
	}
	st.HasState = true
	if ss.formedWith != nil {
		st.FormedWith = ss.formedWith
	}
	for _, s := range l.shards {
		_, leader := s.Raft.LeaderWithID()
		st.Shards = append(st.Shards, route.ShardState{
			LastIndex: s.Raft.LastIndex(), CommitIndex: s.Raft.CommitIndex(), Applied: s.Raft.AppliedIndex(), LeaderID: string(leader),
		})
	}
	if cf := l.shards[0].Raft.GetConfiguration(); cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			st.Members = append(st.Members, string(srv.ID))
		}
	}
	return st
}

// findCluster probes the peers of a node with no state until it knows
// whether a cluster exists. It returns the addresses of peers with state
// (rejoin through them), or nil when the cluster is to be formed: no peer
// has state and a majority of the voters, this node included, answered
// (every voter, or a majority after formationGrace); or a peer formed it
// counting this very incarnation. A peer list that names
// the wrong nodes fails at once; too few answers fail when ctx ends.
func (l *Log) findCluster(ctx context.Context) ([]string, error) {
	need := len(l.cfg.Peers)/2 + 1
	bo := backoff.Backoff{Policy: startPolicy}
	l.startState.mu.Lock()
	incarnation := l.startState.incarnation
	l.startState.mu.Unlock()
	started := time.Now()
	for round := 0; ; round++ {
		addrs := make([]string, len(l.cfg.Peers))
		for i, p := range l.cfg.Peers {
			if p.ID != l.cfg.NodeID {
				addrs[i] = p.Addr
			}
		}
		answers := l.router.ProbeAll(ctx, addrs, probeTimeout)
		empty := []string{l.cfg.NodeID}
		var withState, unreachable []string
		members := map[string]bool{}
		knowsMembers, formedWithMe := false, false
		incarnations := map[string]string{}
		mine := l.ClusterID()
		var theirs, theirsPeer string // the cluster ID of the peers with state, and one that said so
		for i, p := range l.cfg.Peers {
			a := answers[i]
			switch {
			case p.ID == l.cfg.NodeID:
			case a.Err != nil:
				unreachable = append(unreachable, fmt.Sprintf("%s at %s (%v)", p.ID, p.Addr, a.Err))
			case a.State.NodeID != p.ID:
				return nil, fmt.Errorf("%w: Peers lists %s at %s, but the node there is %q", ErrConfig, p.ID, p.Addr, a.State.NodeID)
			case mine != "" && a.State.ClusterID != "" && a.State.ClusterID != mine:
				// A foreign cluster: never rejoined, never counted.
				return nil, l.foreignError(p.ID, p.Addr, a.State.ClusterID)
			case a.State.HasState && theirs != "" && a.State.ClusterID != "" && a.State.ClusterID != theirs:
				return nil, fmt.Errorf("%w: Peers names nodes of two clusters: %s belongs to cluster %s, %s to cluster %s",
					ErrConfig, theirsPeer, theirs, p.ID, a.State.ClusterID)
			case a.State.HasState:
				if a.State.ClusterID != "" {
					theirs, theirsPeer = a.State.ClusterID, p.ID
				}
				withState = append(withState, p.Addr)
				for _, m := range a.State.Members {
					members[m], knowsMembers = true, true
				}
				formedWithMe = formedWithMe || a.State.FormedWith[l.cfg.NodeID] == incarnation
			default:
				empty = append(empty, p.ID)
				incarnations[p.ID] = a.State.Incarnation
			}
		}
		switch {
		case formedWithMe:
			// A peer formed the cluster counting this incarnation as one
			// of its empty voters: this node's empty log is the one the
			// formation assumed, and it forms too.
			l.logger.Info("raftlog: forming the cluster a peer formed with this node", "peers with state", withState)
			return nil, l.adoptClusterID(theirs)
		case len(withState) > 0 && knowsMembers && !members[l.cfg.NodeID]:
			return nil, fmt.Errorf("%w: a cluster exists (members %v), and this node %q is not a member: add it with Join, or fix Peers",
				ErrConfig, slices.Sorted(mapKeys(members)), l.cfg.NodeID)
		case len(withState) > 0 && knowsMembers:
			l.logger.Info("raftlog: a cluster exists; rejoining it as a new incarnation", "peers with state", withState)
			return withState, l.adoptClusterID(theirs)
		case len(withState) == 0 && len(empty) >= need && (len(empty) == len(l.cfg.Peers) || time.Since(started) >= formationGrace):
			l.startState.mu.Lock()
			l.startState.formedWith = incarnations
			l.startState.mu.Unlock()
			l.logger.Info("raftlog: forming a new cluster", "empty voters", empty)
			if mine != "" {
				// raftlog.json survived the data: the new cluster gets a
				// new identity, which this node will learn.
				l.logger.Warn("raftlog: no data and no peer with data; forming a new cluster in place of the one raftlog.json names",
					"old cluster", mine)
				if err := l.storeClusterID(""); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}
		if round%5 == 4 {
			l.logger.Warn("raftlog: no data; waiting for enough peers to answer before forming or rejoining a cluster",
				"answered empty", empty, "need", need, "unreachable", unreachable)
		}
		select {
		case <-bo.After():
		case <-l.closing:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no data, no cluster found and too few voters to form one (%d of %d answered with no data, %d needed); unreachable: %s: %w",
				ErrNoLeader, len(empty), len(l.cfg.Peers), need, strings.Join(unreachable, "; "), ctx.Err())
		}
	}
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// rejoin asks the cluster, through any node of via, to demote this node's
// ID where it is a voter and add it as a non-voter at its address in every
// shard. Until that is committed this node runs no raft: a voter that lost
// its log must not vote. With no leader (the cluster lost its quorum) it
// waits, until ctx ends.
func (l *Log) rejoin(ctx context.Context, via []string) error {
	bo := backoff.Backoff{Policy: startPolicy}
	for attempt := 0; ; attempt++ {
		addr := via[attempt%len(via)]
		actx, cancel := context.WithTimeout(ctx, rejoinAttempt)
		err := l.router.Rejoin(actx, addr, l.cfg.NodeID, l.advertise)
		cancel()
		if err == nil {
			l.logger.Info("raftlog: re-added as a non-voter of every shard; starting raft to catch up", "via", addr)
			return nil
		}
		l.logger.Warn("raftlog: cannot rejoin the cluster yet (no leader?); not running raft meanwhile", "via", addr, "err", err)
		select {
		case <-bo.After():
		case <-l.closing:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: rejoin the cluster through %v: %w (last error: %v)", ErrNoLeader, via, ctx.Err(), err)
		}
	}
}

// promoteWhenCaughtUp makes this rejoined node a voter of each shard once
// its applied index is within promoteLag of the leader's commit index.
func (l *Log) promoteWhenCaughtUp() {
	bo := backoff.Backoff{Policy: startPolicy}
	done := make([]bool, len(l.shards))
	for {
		left := 0
		for i, s := range l.shards {
			if !done[i] {
				done[i] = l.tryPromote(s)
			}
			if !done[i] {
				left++
			}
		}
		if left == 0 {
			return
		}
		select {
		case <-bo.After():
		case <-l.closing:
			return
		}
	}
}

// isVoter reports whether this node is a voter in its latest
// configuration of s.
func (l *Log) isVoter(s *shard) bool {
	cf := s.Raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, srv := range cf.Configuration().Servers {
		if srv.ID == raft.ServerID(l.cfg.NodeID) && srv.Suffrage == raft.Voter {
			return true
		}
	}
	return false
}

// tryPromote reports whether this node is a voter of s, promoting it if
// it has caught up.
func (l *Log) tryPromote(s *shard) bool {
	addr, id := s.Raft.LeaderWithID()
	if id == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), rejoinAttempt)
	defer cancel()
	go func() {
		select {
		case <-l.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	st, err := l.router.Probe(ctx, string(addr))
	if err != nil || int(s.ID) >= len(st.Shards) {
		return false
	}
	commit, applied := st.Shards[s.ID].CommitIndex, s.Raft.AppliedIndex()
	// This node's own configuration says whether it is a voter only once
	// its log reaches the leader's commit index, which is past the rejoin
	// that made it a non-voter: before, it may be replaying an older
	// configuration in which it still is one (#16: a node that took such a
	// configuration for its promotion stopped trying and stayed a
	// non-voter).
	if s.Raft.LastIndex() >= commit && l.isVoter(s) {
		return true
	}
	if applied+promoteLag < commit {
		return false
	}
	if err := l.router.Promote(ctx, s.Shard, l.cfg.NodeID, l.advertise); err != nil {
		l.logger.Warn("raftlog: promotion to voter failed; retrying", "shard", s.ID, "err", err)
		return false
	}
	l.logger.Info("raftlog: caught up and promoted to voter", "shard", s.ID, "applied", applied, "leader commit", commit)
	return true
}
