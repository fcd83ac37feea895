package state

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

func retLog(index uint64, t int64, op wire.RetentionOp) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: wire.EncodeRetentionEntry(t, &op)}
}

// visible lists "key:seq" of every record partition p and each key read
// returns; the two must agree.
func visible(t *testing.T, f *Engine, p core.Partition, keys ...string) []string {
	t.Helper()
	recs, err := f.Read(p, 0, 1000, 1<<20)
	require.NoError(t, err)
	var byPartition []string
	for _, r := range recs {
		byPartition = append(byPartition, fmt.Sprintf("%s:%d", r.Key, r.KeySeq))
	}
	var byKey []string
	for _, k := range keys {
		recs, err := f.ReadKey(p, k, 1, 1000, 1<<20)
		require.NoError(t, err)
		for _, r := range recs {
			byKey = append(byKey, fmt.Sprintf("%s:%d", r.Key, r.KeySeq))
		}
	}
	require.ElementsMatch(t, byPartition, byKey, "partition and key reads agree")
	return byPartition
}

func TestRetentionRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	sec := int64(time.Second)
	keys := []string{"order-1", "order-keep", "user-1", "user-2"}
	var logs []*raft.Log
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	// A category max age of 2 s, a key of it that overrides it with a
	// count, a max count of 2 on user-1 and a truncation of user-2.
	logs = append(logs,
		retLog(next(), 0, wire.RetentionOp{Kind: wire.RetPrefix, Key: "order-", MaxAge: 2 * sec}),
		retLog(next(), 0, wire.RetentionOp{Kind: wire.RetKey, Key: "order-keep", MaxCount: 10}),
		retLog(next(), 0, wire.RetentionOp{Kind: wire.RetKey, Key: "user-1", MaxCount: 2}),
		retLog(next(), 0, wire.RetentionOp{Kind: wire.RetKey, Key: "user-2", Before: 3}),
	)
	id := 0
	for _, k := range keys {
		for range 4 {
			id++
			logs = append(logs, entryLog(next(), sec, req(0, k, -1, id)))
		}
	}
	for i, resp := range f.ApplyBatch(logs) {
		if i < 4 {
			require.Nil(t, resp, "entry %d", i)
		} else {
			require.NotContains(t, outcomeString(resp), "err", "entry %d", i)
		}
	}
	all := []string{"order-1:1", "order-1:2", "order-1:3", "order-1:4", "order-keep:1", "order-keep:2", "order-keep:3", "order-keep:4",
		"user-1:3", "user-1:4", "user-2:3", "user-2:4"}
	require.Equal(t, all, visible(t, f, 0, keys...), "max count keeps the newest 2, truncate-before hides below 3")

	// At 3 s the category's records are 2 s old: still there (older than,
	// not as old as, the max age hides).
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(next(), 3*sec, wire.RetentionOp{Kind: wire.RetTick})})[0])
	require.Equal(t, all, visible(t, f, 0, keys...))
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(next(), 3*sec+1, wire.RetentionOp{Kind: wire.RetTick})})[0])
	expired := []string{"order-keep:1", "order-keep:2", "order-keep:3", "order-keep:4", "user-1:3", "user-1:4", "user-2:3", "user-2:4"}
	require.Equal(t, expired, visible(t, f, 0, keys...), "the category expired; the key with its own rule did not")

	// A new record of user-1 leaves the newest two.
	require.Equal(t, "p0@16 seq5 n1 dup=false idx=23 ", outcomeString(f.ApplyBatch([]*raft.Log{entryLog(next(), 4*sec, req(0, "user-1", -1, 100))})[0]))
	after := []string{"order-keep:1", "order-keep:2", "order-keep:3", "order-keep:4", "user-1:4", "user-2:3", "user-2:4", "user-1:5"}
	require.Equal(t, after, visible(t, f, 0, keys...))
	rule, ok := f.KeyRetention(0, "order-2")
	require.True(t, ok)
	require.Equal(t, Rule{MaxAge: 2 * sec}, rule, "a key without a rule takes its category's")

	// The same view after a restart (the rules and the time are stored)
	// and on a replica that installs a full copy.
	require.NoError(t, f.Close())
	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, after, visible(t, f, 0, keys...), "after a restart")
	dst := restoredCopy(t, f)
	require.Equal(t, after, visible(t, dst, 0, keys...), "after a full copy is installed")
	require.Equal(t, stateHash(t, f), stateHash(t, dst))

	// Removing the category's rule shows again what no scavenge removed.
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(next(), 5*sec, wire.RetentionOp{Kind: wire.RetPrefix, Key: "order-"})})[0])
	require.Contains(t, visible(t, f, 0, keys...), "order-1:1")
}

func TestRetentionPartitionCaps(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	sec := int64(time.Second)
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(1, 0, wire.RetentionOp{Kind: wire.RetPartition, Partition: 1, MaxAge: sec})})[0])
	f.ApplyBatch([]*raft.Log{entryLog(2, 0, req(1, "a", -1, 1), req(1, "b", -1, 2), req(0, "c", -1, 3))})
	f.ApplyBatch([]*raft.Log{entryLog(3, sec, req(1, "a", -1, 4))})
	require.Equal(t, []string{"a:1", "b:1", "a:2"}, visible(t, f, 1, "a", "b"))
	f.ApplyBatch([]*raft.Log{retLog(4, 2*sec, wire.RetentionOp{Kind: wire.RetTick})})
	require.Equal(t, []string{"a:2"}, visible(t, f, 1, "a", "b"), "older than the partition's max age")
	require.Equal(t, []string{"c:1"}, visible(t, f, 0, "c"), "another partition keeps its records")

	// The low offset only rises, and not past the partition's end.
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(5, 2*sec, wire.RetentionOp{Kind: wire.RetTruncatePartition, Partition: 0, Before: 99})})[0])
	require.Equal(t, uint64(1), f.PartitionRetention(0).Low)
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(6, 2*sec, wire.RetentionOp{Kind: wire.RetTruncatePartition, Partition: 0, Before: 0})})[0])
	require.Equal(t, uint64(1), f.PartitionRetention(0).Low)
	require.Empty(t, visible(t, f, 0, "c"))
}

func TestRetentionRefusesWhatItCannotHold(t *testing.T) {
	f, err := openTest(filepath.Join(t.TempDir(), "state.db"), 0, 4, 2, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	idx := uint64(0)
	apply := func(op wire.RetentionOp) any {
		idx++
		return f.ApplyBatch([]*raft.Log{retLog(idx, 0, op)})[0]
	}
	for i := range maxPrefixRules {
		require.Nil(t, apply(wire.RetentionOp{Kind: wire.RetPrefix, Key: fmt.Sprintf("c%d-", i), MaxCount: 1}))
	}
	before := f.ret
	err, _ = apply(wire.RetentionOp{Kind: wire.RetPrefix, Key: "one-more-", MaxCount: 1}).(error)
	require.ErrorIs(t, err, core.ErrConfig)
	require.Same(t, before, f.ret, "a refused change changes nothing")
	require.Nil(t, apply(wire.RetentionOp{Kind: wire.RetPrefix, Key: "c0-", MaxCount: 2}), "changing an existing rule is allowed")

	err, _ = apply(wire.RetentionOp{Kind: wire.RetKey, Partition: 1, Key: "k", MaxCount: 1}).(error)
	require.ErrorIs(t, err, core.ErrUnknownPartition, "partition 1 is shard 1's")
	err, _ = apply(wire.RetentionOp{Kind: wire.RetKey, Partition: 0, Key: "k", MaxAge: -1}).(error)
	require.ErrorIs(t, err, core.ErrConfig)
	err, _ = apply(wire.RetentionOp{Kind: 99}).(error)
	require.ErrorIs(t, err, core.ErrCorrupt)

	// An entry that does not decode is rejected alike everywhere.
	idx++
	err, _ = f.ApplyBatch([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: []byte{wire.CmdRetention, 0x80}}})[0].(error)
	require.ErrorIs(t, err, core.ErrCorrupt)
}
