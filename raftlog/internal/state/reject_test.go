package state

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// An entry that cannot be decoded is rejected with an error response and
// changes nothing; the entries around it apply, and two replicas applying
// the same log end with the same state.
func TestFSMRejectsUndecodableEntries(t *testing.T) {
	bad := []*raft.Log{
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte{0xde, 0xad, 0xbe, 0xef}},
		{Index: 3, Term: 1, Type: raft.LogCommand, Data: nil},
		{Index: 4, Term: 1, Type: raft.LogCommand, Data: []byte{wire.CmdAppend, 0x02}},
		{Index: 5, Term: 1, Type: raft.LogCommand, Data: []byte{wire.CmdGroup, 0x02, 0x09}},
	}
	run := func() *Engine {
		f := newTestFSM(t, time.Hour)
		logs := append([]*raft.Log{entryLog(1, 1000, req(1, "a", 0, 1, 2))}, bad...)
		logs = append(logs, entryLog(6, 1001, req(1, "a", 2, 3)))
		resp := f.ApplyBatch(logs)
		require.Equal(t, "p1@0 seq1 n2 dup=false idx=1 ", outcomeString(resp[0]))
		for i := 1; i <= len(bad); i++ {
			err, ok := resp[i].(error)
			require.True(t, ok, "entry %d: response %T", i+1, resp[i])
			require.True(t, errors.Is(err, core.ErrCorrupt), "entry %d: %v", i+1, err)
		}
		require.Equal(t, "p1@2 seq3 n1 dup=false idx=6 ", outcomeString(resp[len(bad)+1]))
		require.Equal(t, uint64(6), f.Applied())
		return f
	}
	a, b := run(), run()
	a.flush()
	b.flush()
	require.Equal(t, stateHash(t, a), stateHash(t, b))
}

// FuzzFSMApply proposes arbitrary bytes as entries, alone and between
// valid ones: the state machine never panics, and what it applies
// afterwards still applies.
func FuzzFSMApply(f *testing.F) {
	r := req(1, "key", 0, 1, 2)
	f.Add(wire.EncodeRequest(wire.EncodeEntryHeader(nil, 5, 1), &r))
	f.Add(wire.EncodeGroupEntry(7, &wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: "m", Session: int64(time.Second)}))
	f.Add([]byte{wire.CmdAppend})
	f.Add([]byte{wire.CmdGroup, 0, 0})
	f.Add([]byte{})
	e := newTestFSM(f, time.Hour)
	index := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		index += 2
		good := req(2, "ok", -1, int(index))
		e.ApplyBatch([]*raft.Log{
			{Index: index - 1, Term: 1, Type: raft.LogCommand, Data: data},
			entryLog(index, int64(index), good),
		})
		require.Equal(t, index, e.Applied())
	})
}
