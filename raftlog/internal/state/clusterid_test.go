package state

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/wire"
)

func clusterIDLog(index uint64, id uuid.UUID) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: wire.EncodeClusterID(id)}
}

// Two leaders in turn each proposed a cluster ID before applying the
// other's (a leader change while the first proposal was in flight): every
// replica keeps the first in log order, however the entries are batched,
// and keeps it across a flush and restart, a crash (raft replays the
// entries) and a full copy.
func TestClusterIDFirstProposalWins(t *testing.T) {
	first, second := uuid.New(), uuid.New()
	logs := []*raft.Log{entryLog(1, 1, req(0, "k", 0, 1)), clusterIDLog(2, first), clusterIDLog(3, second), entryLog(4, 2, req(0, "k", 1, 2))}

	path := filepath.Join(t.TempDir(), "fsm.db")
	a, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	require.Equal(t, "", a.ClusterID(), "no identity until one is applied")
	out := a.ApplyBatch(logs)
	require.Equal(t, first.String(), out[1])
	require.Equal(t, first.String(), out[2], "the later proposal is answered with the identity in force")
	require.Equal(t, first.String(), a.ClusterID())

	b := newTestFSM(t, time.Hour) // the same entries, one batch each
	for _, l := range logs {
		b.ApplyBatch([]*raft.Log{l})
	}
	require.Equal(t, first.String(), b.ClusterID())
	require.Equal(t, stateHash(t, a), stateHash(t, b))

	// Flushed and reopened.
	require.NoError(t, a.Close())
	a, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	require.Equal(t, first.String(), a.ClusterID())
	a.ApplyBatch([]*raft.Log{clusterIDLog(5, second)})
	require.Equal(t, first.String(), a.ClusterID())

	// A crash before the ID reached the file: raft replays the entries.
	cpath := filepath.Join(t.TempDir(), "fsm.db")
	c, err := openTest(cpath, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	c.ApplyBatch(logs[:1])
	c.flush(false)
	c.ApplyBatch(logs[1:])
	crashFSM(t, c)
	c, err = openTest(cpath, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, "", c.ClusterID(), "the file covers index 1 only")
	c.ApplyBatch(logs)
	require.Equal(t, first.String(), c.ClusterID())

	// A full copy carries it to a replica that never applied the entry.
	d := restoredCopy(t, a)
	require.Equal(t, first.String(), d.ClusterID())
	require.NoError(t, a.Close())
}

func TestClusterIDEntryDecoding(t *testing.T) {
	id := uuid.New()
	got, err := wire.DecodeClusterID(wire.EncodeClusterID(id))
	require.NoError(t, err)
	require.Equal(t, id, got)
	for _, bad := range [][]byte{{wire.CmdClusterID}, append(wire.EncodeClusterID(id), 0), wire.EncodeClusterID(uuid.UUID{})} {
		_, err := wire.DecodeClusterID(bad)
		require.Error(t, err)
	}
	// A malformed entry is rejected alike on every replica and sets nothing.
	f := newTestFSM(t, time.Hour)
	out := f.ApplyBatch([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte{wire.CmdClusterID, 1}}})
	require.Error(t, out[0].(error))
	require.Equal(t, "", f.ClusterID())
}
