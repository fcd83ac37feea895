// Package client opens an event store as a thin client of a cluster: a
// process that appends, reads, subscribes or runs consumer-group members
// without holding a replica of the log. It connects to one node (any node:
// writes go to the leader from there) and fails over to the others on its
// own; the *eventstore.Store it returns has the embedded store's API,
// semantics and errors, so aggregate, projection and outbox run on it
// unchanged.
//
// What a client keeps across a failover:
//
//   - appends: every event has its ID before the first attempt, and a
//     retry, on any node, sends the same request, which the log
//     deduplicates; an append whose outcome no node could report before
//     ctx ended fails with ErrUnknownOutcome (retry it with the same
//     event IDs), one that surely did nothing with ErrUnavailable;
//   - reads: a node serves the client only a state at least as new as
//     the newest it has seen (its own writes, Sync, Barrier), so reads
//     never go back in time when the client moves to a replica that lags;
//   - subscriptions and consumer groups go on from where they were: their
//     waits are long polls (at most 10 s each) asked again on the next node.
//
// The client speaks the nodes' own protocol on their cluster address (one
// port per node, mutual TLS 1.3): its certificate, from the cluster's CA,
// names it as a worker, esraft://<cluster>/worker/<id> (`esraft certs
// -workers <id>`); it need not be a member of the cluster. Without TLS, nodes
// serve clients from loopback only. Each node bounds what clients can make
// it hold: calls at once (raftlog.Config.MaxClientCalls; ErrBusy beyond,
// retried by the client), the time of each call and the size of each read.
package client

import (
	"context"
	"fmt"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
)

// Config is the client's configuration: the nodes' cluster addresses
// (one is enough; the others are learned), its ID and TLS identity, the
// bound on one attempt on one node, and the logger. See
// raftlog.RemoteConfig.
type Config = raftlog.RemoteConfig

// Open connects to the cluster and returns a store over it, once a node
// answered; Close the store to close the connection. It fails when ctx
// ends before any node of cfg.Addrs answers. Of opts, those of the store
// apply (Logger, and Encrypt, which must match the cluster's nodes');
// the log's options configure nodes, not clients.
func Open(ctx context.Context, cfg Config, opts ...eventstore.Option) (*eventstore.Store, error) {
	r, err := raftlog.Dial(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return eventstore.NewOwned(r, opts...), nil
}
