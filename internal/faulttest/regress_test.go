package faulttest

import (
	"context"
	"errors"
	"flag"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
)

// Regression tests for bugs the suite found in packages it does not own.
// A test whose bug is not fixed yet is skipped unless -fault.knownbugs is
// given; whoever fixes the bug removes the skip.
var flagKnownBugs = flag.Bool("fault.knownbugs", false, "run the regression tests of known, unfixed bugs")

// oneWay is an in-process network whose links can be cut in one direction
// only: dials from one node to another's address fail and the connections
// that node dialed there are closed, while connections the other node
// dialed (and the replies on them) still work.
type oneWay struct {
	mu      sync.Mutex
	blocked map[[2]string]bool // (from node ID, to address)
	conns   map[net.Conn][2]string
}

func newOneWay() *oneWay {
	return &oneWay{blocked: map[[2]string]bool{}, conns: map[net.Conn][2]string{}}
}

func (w *oneWay) dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		k := [2]string{from, addr}
		w.mu.Lock()
		blocked := w.blocked[k]
		w.mu.Unlock()
		if blocked {
			return nil, errors.New("oneway: blocked")
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.blocked[k] {
			c.Close()
			return nil, errors.New("oneway: blocked")
		}
		w.conns[c] = k
		return c, nil
	}
}

// block cuts the direction from node ID from to address to.
func (w *oneWay) block(from, to string) {
	w.mu.Lock()
	k := [2]string{from, to}
	w.blocked[k] = true
	var doomed []net.Conn
	for c, ck := range w.conns {
		if ck == k {
			doomed = append(doomed, c)
			delete(w.conns, c)
		}
	}
	w.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// TestRegressionAppendReadYourWriteOnAcknowledgingNode: eventstore's
// package documentation promises "After Append returns, reads on the node
// that took it see it". Store.Append (eventstore/store.go) waits for the
// local apply in readYourWrite, which ignores WaitApplied's error: when
// the append's ctx ends before this node applies the committed entry,
// Append returns success and a read on the same node does not see the
// event. The fault suite saw it under partitions (appends acknowledged
// after exactly their deadline, read back as missing). Here: a follower
// takes an append while the leader cannot reach it (one direction cut), so
// the leader commits with the other follower and replies, but the
// follower never learns the commit before the deadline.
func TestRegressionAppendReadYourWriteOnAcknowledgingNode(t *testing.T) {
	if !*flagKnownBugs {
		t.Skip("known bug, not yet fixed: eventstore Append reports success before the local apply (run with -fault.knownbugs)")
	}
	nw := newOneWay()
	c := eventstoretest.StartCluster(t, 3, eventstore.LogConfig(func(cfg *raftlog.Config) {
		cfg.Dialer = nw.dialer(cfg.NodeID)
	}))
	leader := c.Leader(t)
	follower := (leader + 1) % 3
	f := c.Node(follower)
	ctx := context.Background()

	// Warm up: the follower's connection to the leader is open.
	_, err := f.Append(ctx, "ryw", eventstore.NoStream, []eventstore.EventData{{Type: "Warm"}})
	require.NoError(t, err)

	// The leader can no longer reach the follower; the follower still
	// reaches the leader, and the leader still has a quorum with the third.
	nw.block(c.Node(leader).Log().NodeID(), f.Log().Addr())

	id := uuid.Must(uuid.NewV7())
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	res, err := f.Append(actx, "ryw", eventstore.Exact(1), []eventstore.EventData{{ID: id, Type: "Written"}})
	cancel()
	if err != nil {
		return // reporting the write as not (yet) visible here keeps the promise
	}
	evs, err := f.ReadStream(ctx, "ryw", res.FirstVersion, 1)
	require.NoError(t, err)
	require.Len(t, evs, 1, "Append on %s returned success for version %d (position %+v), but a read on the same node does not see it",
		f.Log().NodeID(), res.FirstVersion, res.Position)
	require.Equal(t, id, evs[0].ID)
}
