package state

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// runReq is a request of n records under key whose IDs count up from
// head.
func runReq(p core.Partition, key string, head uuid.UUID, n int) wire.Request {
	r := wire.Request{Partition: p, Key: key}
	for i := range n {
		r.Records = append(r.Records, core.NewRecord{ID: idPlus(head, uint64(i)), Value: []byte(fmt.Sprint(i))})
	}
	return r
}

// A run of IDs is one entry of the ID index, and every ID of it is held:
// found where its record went, deduplicated as a whole, in conflict with a
// request that reuses part of it; a run longer than maxIDRun is split.
func TestIDRunsAreOneIndexEntry(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	var ids [2]uuid.UUID
	core.NewIDRun(ids[:])
	head := ids[0]
	idx := uint64(0)
	apply := func(rs ...wire.Request) string {
		idx++
		return outcomeString(f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), rs...)})[0])
	}
	require.Equal(t, "p1@0 seq1 n64 dup=false idx=1 ", apply(runReq(1, "a", head, 64)))
	other := idPlus(head, 1000)
	require.Equal(t, "p1@64 seq1 n5000 dup=false idx=2 ", apply(runReq(1, "b", other, 5000)))

	check := func(when string) {
		for i := range uint64(64) {
			e, ok, err := f.LookupID(idPlus(head, i))
			require.NoError(t, err)
			require.True(t, ok, when)
			require.Equal(t, IDEntry{Partition: 1, Offset: i, KeySeq: i + 1, Time: 1, Count: 64 - i}, e, "%s: ID %d", when, i)
		}
		e, ok, err := f.LookupID(idPlus(other, 4999))
		require.NoError(t, err)
		require.True(t, ok, when)
		require.Equal(t, IDEntry{Partition: 1, Offset: 64 + 4999, KeySeq: 5000, Time: 2, Count: 5000 - 4096 - 903}, e, when)
		for _, id := range []uuid.UUID{idPlus(head, 64), idPlus(head, 999), idPlus(other, 5000), runFloor(head)} {
			_, ok, err := f.LookupID(id)
			require.NoError(t, err)
			require.False(t, ok, "%s: %s is not held", when, id)
		}
	}
	check("in the table")
	_, err := f.Flush()
	require.NoError(t, err)
	check("flushed")
	n, err := f.FlushedIDCount()
	require.NoError(t, err)
	require.Equal(t, 3, n, "one entry per run of at most maxIDRun: 1 + 2")

	require.Equal(t, "p1@0 seq1 n64 dup=true idx=3 ", apply(runReq(1, "a", head, 64)), "a retry of the run")
	require.Equal(t, "p1@10 seq11 n20 dup=true idx=4 ", apply(runReq(1, "a", idPlus(head, 10), 20)), "a retry of part of the run, as each ID would be")
	require.Equal(t, "idconflict ", apply(runReq(1, "c", idPlus(head, 60), 8)), "reuses the run's last IDs")
	require.Equal(t, "idconflict ", apply(runReq(1, "c", idPlus(head, 990), 20)), "its later IDs are the next run's first")
	require.Equal(t, "p1@5064 seq1 n10 dup=false idx=7 ", apply(runReq(1, "c", idPlus(head, 64), 10)), "right after the run")
	require.Equal(t, "idconflict ", apply(runReq(1, "c", idPlus(head, 60), 1)), "one ID of the run")
}

// Whether an ID is held never depends on when a replica pruned expired
// runs: an ID appended again after its run expired, in a run that starts
// below the old one, is found the same on a replica that pruned the old
// run and on one that did not.
func TestIDRunLookupsIgnorePruning(t *testing.T) {
	const hour = int64(time.Hour)
	pruned, kept := newTestFSM(t, time.Hour), newTestFSM(t, time.Hour)
	var ids [1]uuid.UUID
	core.NewIDRun(ids[:])
	head := idPlus(ids[0], 100)
	entries := []*raft.Log{
		entryLog(1, 1, runReq(0, "a", head, 10)),         // IDs 100..109
		entryLog(2, 2*hour, runReq(0, "b", ids[0], 105)), // IDs 0..104, after the first expired
	}
	for _, f := range []*Engine{pruned, kept} {
		for _, e := range entries {
			f.ApplyBatch([]*raft.Log{e})
		}
	}
	_, err := pruned.Flush() // prunes the expired run 100..109
	require.NoError(t, err)
	// Held by the newer run, on both.
	for _, i := range []uint64{0, 100, 104} {
		for _, f := range []*Engine{pruned, kept} {
			e, ok, err := f.LookupID(idPlus(ids[0], i))
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, IDEntry{Partition: 0, Offset: 10 + i, KeySeq: 1 + i, Time: 2 * hour, Count: 105 - i}, e)
		}
	}
	// The apply's answers, expiry judged, are the same on both.
	idx := uint64(2)
	var outs []string
	for _, r := range []wire.Request{
		runReq(0, "c", idPlus(ids[0], 105), 5), // only in the expired run: appended
		runReq(0, "b", idPlus(ids[0], 100), 5), // a retry of the newer run's end
		runReq(0, "d", idPlus(ids[0], 102), 8), // the newer run's end and new IDs: a conflict
	} {
		idx++
		e := entryLog(idx, 2*hour+int64(idx), r)
		a, b := outcomeString(pruned.ApplyBatch([]*raft.Log{e})[0]), outcomeString(kept.ApplyBatch([]*raft.Log{e})[0])
		require.Equal(t, a, b, "request at index %d", idx)
		outs = append(outs, a)
	}
	require.Equal(t, []string{"p0@115 seq1 n5 dup=false idx=3 ", "p0@110 seq101 n5 dup=true idx=4 ", "idconflict "}, outs)
}

// The tables find runs by bucket: a run that crosses into the next bucket
// is found from both, and IDs in no order (callers' random UUIDs, runs of
// one) are each found, in the table and in the file.
func TestIDRunsAcrossBuckets(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	var ids [1]uuid.UUID
	core.NewIDRun(ids[:])
	head := idPlus(idBucket(ids[0]), 1<<idBucketBits-6) // 6 IDs in this bucket, 14 in the next
	reqs := []wire.Request{runReq(2, "edge", head, 20)}
	var random []uuid.UUID
	for i := range 2000 {
		id := uuid.New()
		random = append(random, id)
		reqs = append(reqs, runReq(2, fmt.Sprint("r", i%50), id, 1))
	}
	for i, r := range reqs {
		require.NotContains(t, outcomeString(f.ApplyBatch([]*raft.Log{entryLog(uint64(i+1), int64(i+1), r)})[0]), "dup=true")
	}
	check := func(when string) {
		for i := range uint64(20) {
			e, ok, err := f.LookupID(idPlus(head, i))
			require.NoError(t, err)
			require.True(t, ok, "%s: edge ID %d", when, i)
			require.Equal(t, i, e.Offset, when)
		}
		for i, id := range random {
			e, ok, err := f.LookupID(id)
			require.NoError(t, err)
			require.True(t, ok, "%s: random ID %d", when, i)
			require.Equal(t, uint64(20+i), e.Offset, when)
		}
	}
	check("in the table")
	idx := uint64(len(reqs))
	retry := func(r wire.Request) string {
		idx++
		return outcomeString(f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), r)})[0])
	}
	require.Equal(t, fmt.Sprintf("p2@10 seq11 n10 dup=true idx=%d ", idx+1), retry(runReq(2, "edge", idPlus(head, 10), 10)), "a retry from the next bucket")
	_, err := f.Flush()
	require.NoError(t, err)
	check("flushed")
	require.Equal(t, "idconflict ", retry(runReq(2, "other", idPlus(head, 12), 3)))
}
