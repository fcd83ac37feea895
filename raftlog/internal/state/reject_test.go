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
	a.flush(false)
	b.flush(false)
	require.Equal(t, stateHash(t, a), stateHash(t, b))
}

// FuzzFSMApply proposes arbitrary bytes as an entry between valid ones,
// each input on a fresh state machine: it never panics, applies or
// rejects the entry, applies the valid entry after it, and flushes what it
// applied.
func FuzzFSMApply(f *testing.F) {
	r := req(1, "key", 0, 1, 2)
	f.Add(wire.EncodeRequest(wire.EncodeEntryHeader(nil, 5, 1), &r))
	f.Add(wire.EncodeGroupEntry(7, &wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: "m", Session: int64(time.Second)}))
	f.Add([]byte{wire.CmdAppend})
	f.Add([]byte{wire.CmdGroup, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newTestFSM(t, time.Hour)
		e.ApplyBatch([]*raft.Log{entryLog(1, 1, req(2, "ok", 0, 1))})
		resp := e.ApplyBatch([]*raft.Log{
			{Index: 2, Term: 1, Type: raft.LogCommand, Data: data},
			entryLog(3, 3, req(2, "ok", -1, 2)),
		})
		require.Equal(t, uint64(3), e.Applied())
		if _, ok := resp[1].([]core.AppendOutcome); !ok {
			t.Fatalf("the valid entry after the fuzzed one got %T", resp[1])
		}
		applied, err := e.Flush()
		require.NoError(t, err)
		require.Equal(t, uint64(3), applied)
	})
}

// A group operation without a group or member name (or a join without a
// session) is refused as the entry's outcome on every replica: a group
// named "" used to be created and to crash every flush after it.
func TestFSMRejectsUnfitGroupOperations(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	for i, op := range []wire.GroupOp{
		{Op: wire.GopJoin, Group: "", Member: "m", Session: int64(time.Second)},
		{Op: wire.GopJoin, Group: "g", Member: "", Session: int64(time.Second)},
		{Op: wire.GopJoin, Group: "g", Member: "m"},
		{Op: wire.GopHeartbeat, Group: string(make([]byte, core.MaxKeyBytes+1)), Member: "m"},
	} {
		data := wire.EncodeGroupEntry(int64(i+1), &op)
		resp := f.ApplyBatch([]*raft.Log{{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}})
		out, ok := resp[0].(core.GroupOutcome)
		require.True(t, ok, "op %d: %T", i, resp[0])
		require.ErrorIs(t, out.Err, core.ErrConfig, "op %d", i)
	}
	_, found := f.GroupState("")
	require.False(t, found)
	applied, err := f.Flush()
	require.NoError(t, err, "the flush after them succeeds")
	require.Equal(t, uint64(4), applied)
}
