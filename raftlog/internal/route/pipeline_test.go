package route

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// gatedFSM applies an entry only when the test lets it (one value on
// gate per entry, or all once open is closed) and rejects every entry, so
// each append's outcome is errRejected.
type gatedFSM struct{ gate, open chan struct{} }

var errRejected = errors.New("rejected by the test")

func (f *gatedFSM) Apply(*raft.Log) any {
	select {
	case <-f.gate:
	case <-f.open:
	}
	return errRejected
}

func (f *gatedFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *gatedFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

// singleRaft starts a one-voter raft in memory with fsm and waits until
// it leads.
func singleRaft(t *testing.T, fsm raft.FSM) *raft.Raft {
	t.Helper()
	cfg := raft.DefaultConfig()
	cfg.LocalID = "n1"
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.LogOutput = io.Discard
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	addr, trans := raft.NewInmemTransport("n1")
	require.NoError(t, raft.BootstrapCluster(cfg, store, store, snaps, trans,
		raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}))
	r, err := raft.NewRaft(cfg, fsm, store, store, snaps, trans)
	require.NoError(t, err)
	t.Cleanup(func() { r.Shutdown().Error() })
	wait.Until(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	// The leader's own first entry is written: the log grows only by
	// what the test proposes from here.
	require.NoError(t, r.Barrier(10*time.Second).Error())
	return r
}

// With MaxInflight 1, a second entry is proposed while the first is
// still being applied only if the first carries PipelineBytes or more;
// a third waits for a slot either way.
func TestBatcherPipelinesLargeEntries(t *testing.T) {
	const pipeline = 1000
	large, small := make([]byte, 2*pipeline), []byte("x")
	for _, tc := range []struct {
		name      string
		first     []byte
		pipelined bool
	}{
		{"large entry in flight", large, true},
		{"small entry in flight", small, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsm := &gatedFSM{gate: make(chan struct{}), open: make(chan struct{})}
			r := singleRaft(t, fsm)
			b := NewBatcher(r, BatcherConfig{MaxEntryRequests: 1, MaxEntryBytes: 1 << 20, MaxInflight: 1, PipelineBytes: pipeline})
			b.Start()
			defer b.Close()
			defer close(fsm.open) // first: Close waits for the entries in flight
			base := r.LastIndex()
			errs := make(chan error, 3)
			submit := func(enc []byte) {
				go func() {
					_, err := b.Submit(context.Background(), enc)
					errs <- err
				}()
			}
			proposed := func(n uint64) func() bool { return func() bool { return r.LastIndex() >= base+n } }

			submit(tc.first)
			wait.Until(t, 10*time.Second, "the first entry proposed", proposed(1))
			submit(large)
			if tc.pipelined {
				wait.Until(t, 10*time.Second, "the second entry proposed while the first is applied", proposed(2))
				submit(large)
				require.Never(t, proposed(3), 100*time.Millisecond, 5*time.Millisecond, "a third entry proposed with both slots taken")
			} else {
				require.Never(t, proposed(2), 100*time.Millisecond, 5*time.Millisecond, "a second entry proposed while a small one is in flight")
			}
			// Let every entry apply: each append is answered with the
			// state machine's outcome.
			n := 2
			if tc.pipelined {
				n = 3
			}
			for i := 0; i < n; i++ {
				fsm.gate <- struct{}{}
				require.ErrorIs(t, <-errs, errRejected)
			}
		})
	}
}
