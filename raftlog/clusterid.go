package raftlog

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// The cluster's identity (DESIGN.md, "Bootstrap, identity and rejoin"):
// the leader of shard 0 proposes a UUID as a raft entry (wire.CmdClusterID)
// while the state it has applied holds none; every replica keeps the first
// such entry in log order (internal/state), in shard 0's state file, which
// full copies carry to joiners. Each node also keeps the ID it learned in
// raftlog.json. At Open a node compares it with the IDs its peers answer
// probes with: a node with data never talks its way into another cluster,
// and a node with no data rejoins only the cluster it belongs to (or, if
// it knows none, adopts the ID of the one it rejoins).

// identityProbeTimeout bounds the probe of one peer by a node with data
// checking that its peers belong to its cluster: unreachable peers are
// skipped, so a node with data still starts when they are down.
const identityProbeTimeout = time.Second

// proposeTimeout bounds the wait for a proposed cluster ID to be applied.
const proposeTimeout = 10 * time.Second

// ClusterID returns the identity of the cluster this node belongs to: a
// UUID created once by the cluster's first leader and stored by every
// member. It is "" until this node has learned it.
func (l *Log) ClusterID() string {
	if len(l.shards) > 0 {
		if id := l.shards[0].engine.ClusterID(); id != "" {
			return id
		}
	}
	return l.storedClusterID()
}

// storedClusterID is the cluster ID raftlog.json holds.
func (l *Log) storedClusterID() string {
	l.identMu.Lock()
	defer l.identMu.Unlock()
	return l.ident.ClusterID
}

// storeClusterID writes id as the cluster ID into raftlog.json.
func (l *Log) storeClusterID(id string) error {
	l.identMu.Lock()
	defer l.identMu.Unlock()
	if l.ident.ClusterID == id {
		return nil
	}
	next := l.ident
	next.ClusterID = id
	if err := writeIdentity(l.cfg.Dir, next); err != nil {
		return err
	}
	l.ident = next
	return nil
}

// checkStoredClusterID compares the cluster ID of raftlog.json with the one
// shard 0's state file holds, and stores the latter if the former has none
// (a file written before cluster IDs, or a crash before it was written).
func (l *Log) checkStoredClusterID() error {
	applied, stored := l.shards[0].engine.ClusterID(), l.storedClusterID()
	switch {
	case applied == "" || applied == stored:
		return nil
	case stored == "":
		return l.storeClusterID(applied)
	}
	return fmt.Errorf("%w: %s/raftlog.json names cluster %s, but shard 0's state names cluster %s",
		ErrConfig, l.cfg.Dir, stored, applied)
}

// foreignError is the error of a peer that belongs to another cluster.
func (l *Log) foreignError(peer, addr, theirs string) error {
	return fmt.Errorf("%w: this node %q belongs to cluster %s, but %s at %s belongs to cluster %s: "+
		"its data directory is from another cluster, or Peers (or Join) names another cluster's nodes",
		ErrConfig, l.cfg.NodeID, l.ClusterID(), peer, addr, theirs)
}

// checkPeersClusterID probes the peers of a node with data once (those
// that do not answer in time are skipped) and fails with ErrConfig if one
// of them belongs to a cluster other than this node's.
func (l *Log) checkPeersClusterID(ctx context.Context) error {
	mine := l.ClusterID()
	if mine == "" || l.mux == nil {
		return nil
	}
	type target struct{ id, addr string }
	var targets []target
	for _, p := range l.cfg.Peers {
		if p.ID != l.cfg.NodeID {
			targets = append(targets, target{p.ID, p.Addr})
		}
	}
	if l.cfg.Join != "" {
		targets = append(targets, target{"the Join node", l.cfg.Join})
	}
	addrs := make([]string, len(targets))
	for i, t := range targets {
		addrs[i] = t.addr
	}
	for i, a := range l.router.ProbeAll(ctx, addrs, identityProbeTimeout) {
		if a.State.ClusterID != "" && a.State.ClusterID != mine {
			return l.foreignError(targets[i].id, targets[i].addr, a.State.ClusterID)
		}
	}
	return nil
}

// adoptClusterID makes a node with no data take the identity of the
// cluster it is about to rejoin.
func (l *Log) adoptClusterID(id string) error {
	if id == "" || id == l.storedClusterID() {
		return nil
	}
	l.logger.Info("raftlog: adopting the identity of the cluster this node rejoins", "cluster", id)
	return l.storeClusterID(id)
}

// maintainClusterID runs on every node until the node has applied the
// cluster's identity and stored it in raftlog.json: while this node leads
// shard 0 and has applied none, it proposes one (retried after leader
// changes; proposals after the first change nothing).
func (l *Log) maintainClusterID() {
	s := l.shards[0]
	bo := backoff.Backoff{Policy: startPolicy}
	for {
		changed := s.LeaderWait() // before the checks, so no change is missed
		if id := s.engine.ClusterID(); id != "" {
			if stored := l.storedClusterID(); stored != "" && stored != id {
				l.logger.Error("raftlog: the cluster ID applied differs from the one in raftlog.json; not replacing it",
					"applied", id, "stored", stored)
				return
			}
			if err := l.storeClusterID(id); err != nil {
				l.logger.Warn("raftlog: cannot store the cluster ID; retrying", "err", err)
			} else {
				return
			}
		} else if s.Raft.State() == raft.Leader {
			l.proposeClusterID(s)
		}
		select {
		case <-changed:
		case <-bo.After():
		case <-l.closing:
			return
		}
	}
}

// proposeClusterID proposes this node's stored cluster ID, or a new one,
// on shard 0, of which this node is the leader, and waits (until Close)
// for the outcome.
func (l *Log) proposeClusterID(s *shard) {
	id := uuid.New()
	if stored, err := uuid.Parse(l.storedClusterID()); err == nil {
		id = stored
	}
	f := s.Raft.Apply(wire.EncodeClusterID(id), proposeTimeout)
	done := make(chan error, 1)
	// A future left in raft's queue at shutdown may never resolve: wait
	// for it off the goroutine Close waits for.
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			l.logger.Debug("raftlog: proposing the cluster ID failed; retrying", "err", err)
			return
		}
		if won, _ := f.Response().(string); won != "" {
			l.logger.Info("raftlog: cluster ID applied", "cluster", won, "proposed", id.String())
		}
	case <-l.closing:
	}
}

// checkJoinClusterID probes the Join node of a node with no data once: a
// node of a foreign cluster fails Open, and this node adopts the identity
// of the cluster it joins. If the node does not answer, the rejoin that
// follows retries and reports it.
func (l *Log) checkJoinClusterID(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := l.router.Probe(pctx, l.cfg.Join)
	if err != nil || st.ClusterID == "" {
		return nil
	}
	if mine := l.ClusterID(); mine != "" && mine != st.ClusterID {
		return l.foreignError(fmt.Sprintf("the Join node %q", st.NodeID), l.cfg.Join, st.ClusterID)
	}
	return l.adoptClusterID(st.ClusterID)
}
