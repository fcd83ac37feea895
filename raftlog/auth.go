package raftlog

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/raftlog/internal/route"
)

// Authorization of node-to-node calls (route.Config.Authorize). The rules,
// also in SECURITY.md:
//
// With TLS, the caller is the node its verified certificate names, and
//   - a join (MethodJoin) must be for the caller's own node ID; a worker
//     certificate joins only as a non-voter, and never over a voter of
//     the same ID;
//   - a membership change (MethodMembership: what a member forwards to the
//     leader for a join, an AddVoter, a RemoveServer) comes only from a
//     voter certificate of a current voter;
//   - a client call (route.IsClientMethod: what a Remote asks the node it
//     is connected to) comes from any identity of the cluster, member or
//     not: a worker certificate is how a thin client is admitted;
//   - every other call (forwarded appends, consumer group operations, the
//     read barrier) comes only from a current member, and a worker
//     certificate never from a node that is a voter.
//
// Without TLS (development) there is no identity: membership changes,
// joins and client calls come only from loopback peers; other calls are
// open.

// member is a node of the current configuration.
type member struct{ voter bool }

// members is the union of every shard's current configuration: a node
// being added or removed is in some shards before others.
func (l *Log) members() map[string]member {
	out := map[string]member{}
	if !l.router.IsRunning() {
		return out // no shard's raft runs yet: the node answers probes only
	}
	for _, s := range l.shards {
		f := s.Raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		for _, srv := range f.Configuration().Servers {
			m := out[string(srv.ID)]
			m.voter = m.voter || srv.Suffrage == raft.Voter
			out[string(srv.ID)] = m
		}
	}
	return out
}

func (l *Log) authorize(ctx context.Context, c route.Call) error {
	peer, _ := mux.PeerFromContext(ctx)
	if l.tls == nil {
		return authorizePlain(peer, c)
	}
	id, err := l.tls.identify(peer)
	if err != nil {
		return err
	}
	return authorizeIdentity(id, c, l.members())
}

// authorizePlain is the rule without TLS.
func authorizePlain(peer mux.Peer, c route.Call) error {
	if (c.Method == route.MethodJoin || c.Method == route.MethodRejoin || c.Method == route.MethodMembership) && !loopbackAddr(peer.Addr) {
		return fmt.Errorf("%w: membership change from %v: without TLS only loopback peers may change membership", ErrUnauthorized, peer.Addr)
	}
	if route.IsClientMethod(c.Method) && !loopbackAddr(peer.Addr) {
		return fmt.Errorf("%w: client call from %v: without TLS only loopback clients are served", ErrUnauthorized, peer.Addr)
	}
	return nil
}

// authorizeIdentity is the rule with TLS, for a caller with a verified
// identity and the current members.
func authorizeIdentity(id nodecert.Identity, c route.Call, members map[string]member) error {
	m, isMember := members[id.NodeID]
	deny := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrUnauthorized, id}, args...)...)
	}
	if id.Role == nodecert.Worker && m.voter {
		return deny("a worker certificate for a voter")
	}
	if route.IsClientMethod(c.Method) {
		return nil // any identity the cluster's CA issued
	}
	switch c.Method {
	case route.MethodProbe, route.MethodFeatures:
		// A node deciding whether to form the cluster or rejoin it asks
		// before it is (again) a member: any identity of the cluster may.
		// What a node knows of the protocol is no secret either.
		return nil
	case route.MethodRejoin:
		if c.NodeID != id.NodeID {
			return deny("may rejoin only as itself, not as %q", c.NodeID)
		}
		return nil
	case route.MethodJoin:
		switch {
		case c.NodeID != id.NodeID:
			return deny("may join only as itself, not as %q", c.NodeID)
		case id.Role == nodecert.Worker && c.Op != route.OpAddNonvoter:
			return deny("a worker joins only as a non-voter")
		}
		return nil
	case route.MethodMembership:
		if isMember && id.Role == nodecert.Voter && c.Op == route.OpAddVoter && c.NodeID == id.NodeID {
			// A rejoining node, a non-voter while it catches up, asks to be
			// promoted: its voter certificate is the authority.
			return nil
		}
		if !isMember || !m.voter || id.Role != nodecert.Voter {
			return deny("only voters may change membership")
		}
		return nil
	}
	if !isMember {
		return deny("not a member")
	}
	return nil
}
