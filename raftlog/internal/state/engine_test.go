package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

func newTestFSM(t testing.TB, retention time.Duration) *Engine {
	t.Helper()
	f, err := openTest(filepath.Join(t.TempDir(), "fsm.db"), 0, 4, 1, retention)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func testID(n int) uuid.UUID {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[8:], uint64(n))
	id[0] = 0xEE
	return id
}

func req(p core.Partition, key string, expect int64, ids ...int) wire.Request {
	r := wire.Request{Partition: p, Key: key}
	if expect >= 0 {
		r.Flags, r.Expected = wire.ReqExpected, uint64(expect)
	}
	for _, id := range ids {
		r.Records = append(r.Records, core.NewRecord{
			ID:      testID(id),
			Headers: []core.Header{{Key: "h", Value: []byte(fmt.Sprint(id))}},
			Value:   []byte(fmt.Sprintf("value-%d", id)),
		})
	}
	return r
}

// flagged returns r with flags added.
func flagged(r wire.Request, flags uint64) wire.Request {
	r.Flags |= flags
	return r
}

// keyOp is a delete (before 0) or truncate request on key.
func keyOp(p core.Partition, key string, expect int64, before uint64) wire.Request {
	r := req(p, key, expect)
	if before == 0 {
		r.Flags |= wire.ReqDelete
	} else {
		r.Flags, r.Before = r.Flags|wire.ReqTruncate, before
	}
	return r
}

func entryLog(index uint64, t int64, reqs ...wire.Request) *raft.Log {
	data := wire.EncodeEntryHeader(nil, t, len(reqs))
	for i := range reqs {
		data = wire.EncodeRequest(data, &reqs[i])
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// outcomeString renders outcomes for comparison in transcripts.
func outcomeString(resp any) string {
	outs, ok := resp.([]core.AppendOutcome)
	if !ok {
		return fmt.Sprintf("%v", resp)
	}
	var b bytes.Buffer
	for _, o := range outs {
		r := o.Result
		var kse *core.KeySeqError
		switch {
		case errors.As(o.Err, &kse):
			fmt.Fprintf(&b, "keyseq(cond=%d actual=%d deleted=%v) ", kse.Condition, kse.Actual, kse.Deleted)
		case errors.Is(o.Err, core.ErrKeyDeleted):
			b.WriteString("deleted ")
		case errors.Is(o.Err, core.ErrIDConflict):
			b.WriteString("idconflict ")
		case o.Err != nil:
			fmt.Fprintf(&b, "err(%v) ", o.Err)
		default:
			fmt.Fprintf(&b, "p%d@%d seq%d n%d dup=%v idx=%d ", r.Partition, r.FirstOffset, r.FirstKeySeq, r.Count, r.Duplicate, r.Position.Index)
		}
	}
	return b.String()
}

// stateHash hashes every key and value of every bucket except the
// bookkeeping that legitimately differs (none today: meta included), and
// every segment file's name and bytes.
func stateHash(t testing.TB, f *Engine) string {
	t.Helper()
	h := sha256.New()
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		var walk func(prefix string, b *bolt.Bucket) error
		walk = func(prefix string, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return walk(prefix+string(k)+"/", b.Bucket(k))
				}
				fmt.Fprintf(h, "%s%x=%x\n", prefix, k, v)
				return nil
			})
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name)+"/", b) })
	}))
	hashSegments(t, h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// transcript is a fixed sequence of entries with the outcome each request
// must get. It pins the FSM's semantics: offsets, key sequences, expected
// sequence checks, deduplication of retries, ID conflicts.
var transcript = []struct {
	entry *raft.Log
	want  string
}{
	{entryLog(1, 1000, req(1, "a", 0, 1, 2)), "p1@0 seq1 n2 dup=false idx=1 "},
	{entryLog(2, 1001, req(1, "b", -1, 3), req(1, "a", 2, 4)), "p1@2 seq1 n1 dup=false idx=2 p1@3 seq3 n1 dup=false idx=2 "},
	// a stale expectation fails with the actual sequence; nothing is written
	{entryLog(3, 1002, req(1, "a", 1, 5)), "keyseq(cond=0 actual=3 deleted=false) "},
	// a retry of a committed batch returns its original result, even with
	// an expectation that no longer holds
	{entryLog(4, 1003, req(1, "a", 0, 1, 2)), "p1@0 seq1 n2 dup=true idx=4 "},
	// part of the batch committed before: a conflict
	{entryLog(5, 1004, req(1, "a", -1, 2, 6)), "idconflict "},
	{entryLog(6, 1005, req(1, "a", -1, 6, 2)), "idconflict "},
	// the same IDs under another key are a conflict, not a duplicate
	{entryLog(7, 1006, req(1, "z", -1, 1, 2)), "idconflict "},
	// two requests in one entry on one key apply in order; a repeat of the
	// first inside the same entry is its duplicate
	{entryLog(8, 1007, req(2, "c", 0, 7), req(2, "c", 1, 8), req(2, "c", 0, 7)), "p2@0 seq1 n1 dup=false idx=8 p2@1 seq2 n1 dup=false idx=8 p2@0 seq1 n1 dup=true idx=8 "},
	// an entry at or below the applied index is skipped (restart replay)
	{entryLog(8, 1008, req(2, "c", -1, 9)), "<nil>"},
	// time never goes backwards even if a new leader's clock does
	{entryLog(9, 10, req(3, "d", -1, 10)), "p3@0 seq1 n1 dup=false idx=9 "},
	// truncation hides a key's first records; its sequence goes on
	{entryLog(10, 2000, req(0, "e", 0, 20, 21, 22)), "p0@0 seq1 n3 dup=false idx=10 "},
	{entryLog(11, 2001, keyOp(0, "e", 3, 3)), "p0@0 seq3 n0 dup=false idx=11 "},
	{entryLog(12, 2002, flagged(req(0, "e", -1, 23), wire.ReqExists)), "p0@3 seq4 n1 dup=false idx=12 "},
	// deletion: conditional, then hides everything, then blocks appends
	{entryLog(13, 2003, keyOp(0, "e", 3, 0)), "keyseq(cond=0 actual=4 deleted=false) "},
	{entryLog(14, 2004, keyOp(0, "e", -1, 0), keyOp(0, "e", -1, 0)), "p0@0 seq5 n0 dup=false idx=14 p0@0 seq5 n0 dup=false idx=14 "},
	{entryLog(15, 2005, req(0, "e", -1, 24)), "deleted "},
	{entryLog(16, 2006, flagged(req(0, "e", -1, 24), wire.ReqExists|wire.ReqRecreate)), "keyseq(cond=1 actual=4 deleted=true) "},
	// recreation goes on from the old sequence; the old records stay hidden
	{entryLog(17, 2007, flagged(req(0, "e", -1, 25), wire.ReqAbsent|wire.ReqRecreate)), "p0@4 seq5 n1 dup=false idx=17 "},
	{entryLog(18, 2008, flagged(req(0, "e", -1, 26), wire.ReqAbsent)), "keyseq(cond=2 actual=5 deleted=false) "},
	// truncating a key with no records changes nothing; deleting one
	// still marks it deleted
	{entryLog(19, 2009, keyOp(0, "never", -1, 10)), "p0@0 seq1 n0 dup=false idx=19 "},
	{entryLog(20, 2010, keyOp(0, "ghost", -1, 0), req(0, "ghost", 0, 27)), "p0@0 seq1 n0 dup=false idx=20 deleted "},
	// truncation is capped at the key's end and never moves back
	{entryLog(21, 2011, req(0, "f", -1, 28, 29), keyOp(0, "f", -1, 99), keyOp(0, "f", -1, 1)), "p0@5 seq1 n2 dup=false idx=21 p0@0 seq3 n0 dup=false idx=21 p0@0 seq3 n0 dup=false idx=21 "},
	{entryLog(22, 2012, req(0, "f", 2, 30)), "p0@7 seq3 n1 dup=false idx=22 "},
}

func TestFSMTranscript(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	for i, step := range transcript {
		got := f.ApplyBatch([]*raft.Log{step.entry})
		require.Equal(t, step.want, outcomeString(got[0]), "step %d", i)
	}
	recs, err := f.Read(1, 0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	var keys []string
	for i, r := range recs {
		require.Equal(t, uint64(i), r.Offset)
		keys = append(keys, fmt.Sprintf("%s%d", r.Key, r.KeySeq))
	}
	require.Equal(t, []string{"a1", "a2", "b1", "a3"}, keys)
	d, err := f.Read(3, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Equal(t, time.Unix(0, 1007).UTC(), d[0].Time, "time is max(entry time, last time)")
	seq, err := f.KeySeq(1, "a")
	require.NoError(t, err)
	require.Equal(t, uint64(3), seq)

	// Partition 0: only e5 and f3 are visible; offsets of hidden records
	// are skipped.
	recs, err = f.Read(0, 0, 100, 1<<20)
	require.NoError(t, err)
	keys = keys[:0]
	for _, r := range recs {
		keys = append(keys, fmt.Sprintf("%s%d@%d", r.Key, r.KeySeq, r.Offset))
	}
	require.Equal(t, []string{"e5@4", "f3@7"}, keys)
	recs, err = f.ReadKey(0, "e", 1, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, uint64(5), recs[0].KeySeq)
	info, err := f.KeyInfo(0, "e")
	require.NoError(t, err)
	require.Equal(t, core.KeyInfo{Seq: 5, First: 5}, info)
	info, err = f.KeyInfo(0, "ghost")
	require.NoError(t, err)
	require.Equal(t, core.KeyInfo{Seq: 0, First: 1, Deleted: true}, info)
	require.False(t, info.Exists())
}

// The same entries give the same outcomes and byte-identical state however
// raft splits them into apply batches and whenever the table is flushed,
// as on every replica.
func TestFSMDeterministicAcrossBatching(t *testing.T) {
	var logs []*raft.Log
	for _, s := range transcript {
		if s.entry.Index != 8 || len(logs) == 0 || logs[len(logs)-1].Index != 8 {
			logs = append(logs, s.entry)
		}
	}
	run := func(split int, flushEach bool) ([]string, string) {
		f := newTestFSM(t, time.Hour)
		var outs []string
		for i := 0; i < len(logs); i += split {
			for _, r := range f.ApplyBatch(logs[i:min(i+split, len(logs))]) {
				outs = append(outs, outcomeString(r))
			}
			if flushEach {
				f.flush(false)
			}
		}
		f.flush(false)
		return outs, stateHash(t, f)
	}
	wantOuts, wantHash := run(1, false)
	for _, split := range []int{1, 2, 3, len(logs)} {
		for _, flushEach := range []bool{false, true} {
			outs, hash := run(split, flushEach)
			require.Equal(t, wantOuts, outs, "split %d flush %v", split, flushEach)
			require.Equal(t, wantHash, hash, "split %d flush %v", split, flushEach)
		}
	}
}

func TestFSMRestartSkipsApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, req(0, "k", -1, 1)), entryLog(2, 2, req(0, "k", -1, 2))})
	require.NoError(t, f.Close())

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, uint64(2), f.applied.Load())
	require.Equal(t, uint64(2), f.next[0].Load())
	// raft hands a restarted node entries it already applied: skipped
	resp := f.ApplyBatch([]*raft.Log{entryLog(1, 1, req(0, "k", -1, 1)), entryLog(2, 2, req(0, "k", -1, 2)), entryLog(3, 3, req(0, "k", -1, 3))})
	require.Nil(t, resp[0])
	require.Nil(t, resp[1])
	require.Equal(t, "p0@2 seq3 n1 dup=false idx=3 ", outcomeString(resp[2]))
}

// A crash loses the in-memory table; raft then hands the FSM the entries
// after its last snapshot again, and re-applying them gives the same state
// and the same outcomes as before the crash.
func TestFSMReappliesUnflushedAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	logs := []*raft.Log{entryLog(1, 1, req(0, "k", 0, 1)), entryLog(2, 2, req(0, "k", 1, 2))}
	f.ApplyBatch(logs[:1])
	f.flush(false) // as a snapshot at index 1 would
	before := outcomeString(f.ApplyBatch(logs[1:])[0])
	recs, err := f.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	crashFSM(t, f) // the table is gone

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, uint64(1), f.applied.Load(), "the file covers what was flushed")
	again := f.ApplyBatch(logs) // raft replays from its last snapshot
	require.Nil(t, again[0])
	require.Equal(t, before, outcomeString(again[1]))
	got, err := f.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Equal(t, recs, got)
}

func TestFSMPartitioningIsChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = openTest(path, 0, 8, 1, time.Hour)
	require.ErrorIs(t, err, core.ErrConfig)
}

func TestFSMIDRetention(t *testing.T) {
	const hour = int64(time.Hour)
	f := newTestFSM(t, time.Hour)
	idx := uint64(0)
	apply := func(tm int64, r wire.Request) string {
		idx++
		return outcomeString(f.ApplyBatch([]*raft.Log{entryLog(idx, tm, r)})[0])
	}
	for i := 0; i < 100; i++ {
		apply(int64(i), req(0, fmt.Sprint("k", i), -1, i))
	}
	f.flush(false)
	n, err := f.FlushedIDCount()
	require.NoError(t, err)
	require.Equal(t, 100, n)
	// Within the window, a retry is deduplicated.
	require.Contains(t, apply(hour/2, req(0, "k5", -1, 5)), "dup=true")
	// Past the window, old IDs are no longer found, and a flush prunes them.
	for i := 0; i < 20; i++ {
		apply(2*hour+int64(i), req(1, "new", -1, 1000+i))
	}
	f.flush(false)
	n, err = f.FlushedIDCount()
	require.NoError(t, err)
	require.Equal(t, 20, n, "only IDs inside the retention window remain")
	_, found, err := f.LookupID(testID(5))
	require.NoError(t, err)
	require.False(t, found)
	// A retry older than the window is appended again: the documented limit.
	require.Contains(t, apply(2*hour+100, req(0, "k5", -1, 5)), "seq2 n1 dup=false")
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := newTestFSM(t, time.Hour)
	for i, s := range transcript {
		if i < 8 {
			src.ApplyBatch([]*raft.Log{s.entry})
		}
	}
	// A snapshot taken for compaction is a marker of the applied index.
	snap, err := src.Snapshot()
	require.NoError(t, err)
	sink := &memSink{}
	require.NoError(t, snap.Persist(sink))
	require.Equal(t, snapshotHdrLen, sink.Len(), "a marker's size does not grow with history")
	h, err := readSnapshotHeader(bytes.NewReader(sink.Bytes()))
	require.NoError(t, err)
	require.Equal(t, snapshotHeader{version: snapshotVersion, kind: snapshotMarker, index: 8}, h)

	// Opening it through the store streams a full copy of the live state.
	fileSnaps, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
	require.NoError(t, err)
	store := NewSnapshotStore(fileSnaps, src)
	s, err := store.Create(raft.SnapshotVersionMax, 8, 1, raft.Configuration{}, 1, nil)
	require.NoError(t, err)
	require.NoError(t, snap.Persist(s))
	meta, rc, err := store.Open(s.ID())
	require.NoError(t, err)
	full, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, meta.Size, int64(len(full)), "advertised size is exact")

	// Restoring it on another node discards that node's state.
	dst := newTestFSM(t, time.Hour)
	dst.ApplyBatch([]*raft.Log{entryLog(1, 5, req(2, "other", -1, 99))})
	require.NoError(t, dst.Restore(io.NopCloser(bytes.NewReader(full))))
	require.Equal(t, stateHash(t, src), stateHash(t, dst))
	require.Equal(t, src.applied.Load(), dst.applied.Load())
	for i := range src.next {
		require.Equal(t, src.next[i].Load(), dst.next[i].Load())
	}
	_, found, err := dst.LookupID(testID(99))
	require.NoError(t, err)
	require.False(t, found)

	// A full copy received from a leader is stored as is and passed through.
	s2, err := store.Create(raft.SnapshotVersionMax, 9, 1, raft.Configuration{}, 1, nil)
	require.NoError(t, err)
	_, err = s2.Write(full)
	require.NoError(t, err)
	require.NoError(t, s2.Close())
	_, rc, err = store.Open(s2.ID())
	require.NoError(t, err)
	again, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, full, again)

	// Applies after the restore continue from the restored state.
	out := dst.ApplyBatch([]*raft.Log{entryLog(9, 2000, req(1, "a", 3, 50))})
	require.Equal(t, "p1@4 seq4 n1 dup=false idx=9 ", outcomeString(out[0]))

	// Restoring from a marker is refused: it carries no state.
	require.Error(t, dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))))
}

// A follower can be sent a full copy older than the state it has applied:
// the copy is the leader's state file, which covers the leader's last
// flush, not its last apply, and the follower may already be ahead of it
// (after CatchUpToSnapshot restored a copy from an earlier leader, raft's
// log store still refuses the next entries, and the new leader falls back
// to a snapshot: TestFollowerCrashDuringSnapshotInstall). Restoring it
// would move the replica back: an acknowledged record it had shown would
// vanish until raft sent the entry again. Restore keeps the newer state,
// and makes the file cover it, as a restored one would.
func TestRestoreOlderFullCopyKeepsNewerState(t *testing.T) {
	logs := []*raft.Log{
		entryLog(1, 1000, req(0, "k", 0, 1, 2)),
		entryLog(2, 1001, req(0, "k", 2, 3)),
		entryLog(3, 1002, req(0, "k", 3, 4, 5, 6)),
	}
	// The leader: entry 3 applied but not yet flushed.
	leader := newTestFSM(t, time.Hour)
	leader.ApplyBatch(logs[:2])
	leader.flush(false)
	leader.ApplyBatch(logs[2:])
	full, size, err := leader.openFullCopy()
	require.NoError(t, err)
	copyBytes, err := io.ReadAll(full)
	require.NoError(t, err)
	require.NoError(t, full.Close())
	require.Equal(t, size, int64(len(copyBytes)))
	h, err := readSnapshotHeader(bytes.NewReader(copyBytes))
	require.NoError(t, err)
	require.Equal(t, uint64(2), h.index, "the copy is the leader's file: its last flush")

	// The follower has applied all three entries.
	follower := newTestFSM(t, time.Hour)
	follower.ApplyBatch(logs)
	seen, err := follower.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Len(t, seen, 6)

	require.NoError(t, follower.Restore(io.NopCloser(bytes.NewReader(copyBytes))))
	require.Equal(t, uint64(3), follower.Applied(), "a restore never moves the applied index back")
	got, err := follower.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Equal(t, seen, got, "records the replica showed stay visible")
	require.Equal(t, uint64(3), fileAppliedOf(t, follower), "the file covers the state kept")

	// Raft then hands over the entries after its snapshot index: skipped.
	require.Nil(t, follower.ApplyBatch(logs[2:])[0])
	leader.flush(false)
	require.Equal(t, stateHash(t, leader), stateHash(t, follower))
}

// crashFSM stops f the way a killed process would: the flusher stops after
// the flush in progress, if any, and the tables are lost.
func crashFSM(t testing.TB, f *Engine) {
	t.Helper()
	require.NoError(t, f.Probe().Crash())
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

// Truncated and deleted records leave the state file at the next flush,
// and key metadata and the partition's next offset survive a restart even
// when erasure emptied the partition's end.
func TestFSMErasesAndKeepsKeyStateAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, req(0, "x", 0, 1, 2, 3))})
	f.flush(false) // x1..x3 in the file
	f.ApplyBatch([]*raft.Log{entryLog(2, 2, req(0, "x", 3, 4), keyOp(0, "x", -1, 0))})
	f.flush(false) // x4 never reaches the file; x1..x3 are erased from it
	require.Empty(t, segmentRecords(t, f, 0), "deleted records are gone from the segments")
	require.NoError(t, f.Close())

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, uint64(4), f.next[0].Load(), "offsets are never reused")
	out := f.ApplyBatch([]*raft.Log{entryLog(3, 3, req(0, "x", -1, 5), flagged(req(0, "x", 4, 6), wire.ReqRecreate))})
	require.Equal(t, "deleted p0@4 seq5 n1 dup=false idx=3 ", outcomeString(out[0]))
	recs, err := f.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, uint64(4), recs[0].Offset)
	// a retry of an erased record's append is still recognised
	out = f.ApplyBatch([]*raft.Log{entryLog(4, 4, req(0, "x", -1, 1, 2, 3))})
	require.Equal(t, "p0@0 seq1 n3 dup=true idx=4 ", outcomeString(out[0]))
}

// holdFlushes makes f's flusher wait before writing each table until
// release is closed or the flusher is stopped; every table it holds is
// announced on the returned channel.
func holdFlushes(f *Engine, release <-chan struct{}) <-chan struct{} {
	held := make(chan struct{}, 100)
	f.beforeFlush = func() {
		held <- struct{}{}
		select {
		case <-release:
		case <-f.flushStop:
		}
	}
	return held
}

func fileAppliedOf(t testing.TB, f *Engine) uint64 {
	t.Helper()
	var applied uint64
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		var err error
		applied, err = fileApplied(tx)
		return err
	}))
	return applied
}

// While a frozen table is being written, readers and applies find its
// records, key runs and IDs between the active table and the file, and a
// table that fills meanwhile waits for the flush (back-pressure).
func TestFSMFrozenTableIsVisible(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, req(0, "a", 0, 1), req(0, "b", -1, 2))})
	f.flush(false) // table 1 (a1 b1) in the file
	release := make(chan struct{})
	held := holdFlushes(f, release)
	f.flushAtRecords = 2
	f.ApplyBatch([]*raft.Log{entryLog(2, 2, req(0, "a", 1, 3, 4))})
	<-held // table 2 (a2 a3) frozen, held
	f.flushAtRecords = 3
	out := f.ApplyBatch([]*raft.Log{entryLog(3, 3, req(0, "a", 3, 5), req(0, "b", 1, 6), req(0, "a", 1, 3, 4))})
	require.Equal(t, "p0@4 seq4 n1 dup=false idx=3 p0@5 seq2 n1 dup=false idx=3 p0@2 seq2 n2 dup=true idx=3 ", outcomeString(out[0]),
		"expectations and retries are judged across the frozen table")
	require.NotNil(t, f.frozen)
	require.Equal(t, uint64(1), fileAppliedOf(t, f))

	check := func() {
		t.Helper()
		recs, err := f.Read(0, 0, 100, 1<<20)
		require.NoError(t, err)
		var got []string
		for i, r := range recs {
			require.Equal(t, uint64(i), r.Offset)
			got = append(got, fmt.Sprintf("%s%d", r.Key, r.KeySeq))
		}
		require.Equal(t, []string{"a1", "b1", "a2", "a3", "a4", "b2"}, got)
		for from, want := range map[uint64][]uint64{1: {0, 2, 3, 4}, 2: {2, 3, 4}, 4: {4}} {
			byKey, err := f.ReadKey(0, "a", from, 100, 1<<20)
			require.NoError(t, err)
			var offs []uint64
			for i, r := range byKey {
				require.Equal(t, from+uint64(i), r.KeySeq)
				offs = append(offs, r.Offset)
			}
			require.Equal(t, want, offs, "key a from %d", from)
		}
		// bounds stop a read inside any layer without skipping records
		for max := 1; max <= 6; max++ {
			part, err := f.Read(0, 1, max, 1<<20)
			require.NoError(t, err)
			require.Len(t, part, min(max, 5))
			require.Equal(t, uint64(1), part[0].Offset)
		}
		seq, err := f.KeySeq(0, "a")
		require.NoError(t, err)
		require.Equal(t, uint64(4), seq)
		e, found, err := f.LookupID(testID(4))
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, uint64(3), e.Offset)
	}
	check()

	// Table 3 is full too: the next freeze waits for table 2's flush.
	done := make(chan []any)
	go func() { done <- f.ApplyBatch([]*raft.Log{entryLog(4, 4, req(1, "c", -1, 7))}) }()
	select {
	case <-done:
		t.Fatal("a second full table was frozen while the first was being written")
	default:
	}
	close(release)
	require.Equal(t, "p1@0 seq1 n1 dup=false idx=4 ", outcomeString((<-done)[0]))
	f.waitFlushed(false)
	require.Equal(t, uint64(4), fileAppliedOf(t, f))
	check()
}

// A flushed table stores its own last index as the file's applied index,
// never a later one: a crash with a table frozen and unwritten loses
// nothing that raft does not hand back.
func TestFSMCrashWithFrozenTableUnflushed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	f.flushAtRecords = 2
	release := make(chan struct{})
	held := holdFlushes(f, release)
	logs := []*raft.Log{
		entryLog(1, 1, req(0, "k", 0, 1)),
		entryLog(2, 2, req(0, "k", 1, 2)), // table 1 full: frozen, held
		entryLog(3, 3, req(0, "k", 2, 3)), // active
	}
	var before []string
	for _, l := range logs {
		before = append(before, outcomeString(f.ApplyBatch([]*raft.Log{l})[0]))
	}
	<-held
	recs, err := f.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	require.Equal(t, uint64(0), fileAppliedOf(t, f))
	crashFSM(t, f)

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, uint64(0), f.applied.Load(), "nothing was flushed")
	var again []string
	for _, r := range f.ApplyBatch(logs) {
		again = append(again, outcomeString(r))
	}
	require.Equal(t, before, again)
	got, err := f.Read(0, 0, 10, 1<<20)
	require.NoError(t, err)
	require.Equal(t, recs, got)
}

// Snapshot freezes the active table and returns once no earlier frozen
// table is unwritten; its Persist returns only once the file covers the
// marker's index, so raft never compacts past what the file holds.
func TestFSMSnapshotWaitsForFrozenTables(t *testing.T) {
	f := newTestFSM(t, time.Hour)
	f.flushAtRecords = 1
	release := make(chan struct{})
	held := holdFlushes(f, release)
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, req(0, "k", -1, 1))})
	<-held
	f.flushAtRecords = 100
	f.ApplyBatch([]*raft.Log{entryLog(2, 2, req(0, "k", -1, 2))}) // active
	type result struct {
		snap raft.FSMSnapshot
		err  error
	}
	done := make(chan result)
	go func() {
		s, err := f.Snapshot()
		done <- result{s, err}
	}()
	select {
	case <-done:
		t.Fatal("Snapshot returned while a frozen table was unwritten")
	default:
	}
	require.Equal(t, uint64(0), fileAppliedOf(t, f))
	release <- struct{}{} // the first table's flush
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, uint64(2), r.snap.(markerSnapshot).index)
	require.Zero(t, f.mem.n, "the snapshot froze the active table")

	persisted := make(chan error)
	sink := &memSink{}
	go func() { persisted <- r.snap.Persist(sink) }()
	select {
	case <-persisted:
		t.Fatal("Persist returned while the table it covers was unwritten")
	default:
	}
	require.Equal(t, uint64(1), fileAppliedOf(t, f))
	close(release)
	require.NoError(t, <-persisted)
	require.Equal(t, uint64(2), fileAppliedOf(t, f))
	h, err := decodeSnapshotHeader(sink.Bytes())
	require.NoError(t, err)
	require.Equal(t, snapshotHeader{version: snapshotVersion, kind: snapshotMarker, index: 2}, h)
	require.Nil(t, f.frozen)
}

// A key truncated and a consumer group changed while a table is frozen:
// the frozen table's flush writes the key metadata and the group as of its
// own last index, readers see the newer state at once, and a crash before
// the next flush recovers to exactly the same state as never freezing.
func TestFSMKeyAndGroupChangesWhileFrozen(t *testing.T) {
	group := func(idx uint64, sec int64, member string) *raft.Log {
		op := wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: member, Session: int64(time.Minute)}
		return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: wire.EncodeGroupEntry(sec*int64(time.Second), &op)}
	}
	logs := []*raft.Log{
		entryLog(1, 1, req(0, "x", 0, 1, 2, 3)),
		entryLog(2, 2, req(0, "x", 3, 4)),
		group(3, 3, "m1"),
		entryLog(4, 4, keyOp(0, "x", -1, 3)), // hides x1, x2
		group(5, 5, "m2"),
	}
	members := func(f *Engine) []string {
		s, ok := f.GroupState("g")
		require.True(t, ok)
		var names []string
		for _, m := range s.Members {
			names = append(names, m.ID)
		}
		sort.Strings(names)
		return names
	}
	keySeqs := func(f *Engine) []uint64 {
		recs, err := f.Read(0, 0, 10, 1<<20)
		require.NoError(t, err)
		var seqs []uint64
		for _, r := range recs {
			seqs = append(seqs, r.KeySeq)
		}
		return seqs
	}

	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	f.ApplyBatch(logs[:1])
	f.flush(false) // x1..x3 in the file
	release := make(chan struct{})
	held := holdFlushes(f, release)
	f.flushAtRecords = 1
	f.ApplyBatch(logs[1:3]) // x4 and m1: frozen, held
	<-held
	f.flushAtRecords = 100
	f.ApplyBatch(logs[3:]) // the truncation and m2, in the active table
	require.Equal(t, []uint64{3, 4}, keySeqs(f), "readers see the truncation at once")
	require.Equal(t, []string{"m1", "m2"}, members(f))
	close(release)
	f.waitFlushed(false)
	require.Equal(t, uint64(3), fileAppliedOf(t, f))
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(partitionBucketName(0))
		require.Len(t, segmentRecordsIn(t, f, tx, 0), 4, "x1..x4: the truncation is not the frozen table's")
		require.Nil(t, pb.Bucket(bucketKeyMeta).Get([]byte("x")))
		v, err := getValue(tx.Bucket(bucketGroups), []byte("g"))
		require.NoError(t, err)
		g, err := cgroup.Decode(v)
		require.NoError(t, err)
		require.Len(t, g.State("g").Members, 1, "the group as of the frozen table's last index")
		return nil
	}))
	crashFSM(t, f) // the active table is lost

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, uint64(3), f.applied.Load())
	require.Equal(t, []uint64{1, 2, 3, 4}, keySeqs(f))
	require.Equal(t, []string{"m1"}, members(f))
	f.ApplyBatch(logs) // raft replays what the file does not cover
	require.Equal(t, []uint64{3, 4}, keySeqs(f))
	require.Equal(t, []string{"m1", "m2"}, members(f))
	f.flush(false)

	ref := newTestFSM(t, time.Hour)
	ref.ApplyBatch(logs)
	ref.flush(false)
	require.Equal(t, stateHash(t, ref), stateHash(t, f))
}

// keyOffsets returns key's sequence -> offset, from a read of the whole
// partition p.
func keyOffsets(t *testing.T, f *Engine, p core.Partition, key string) map[uint64]uint64 {
	t.Helper()
	recs, err := f.Read(p, 0, 1<<20, 1<<30)
	require.NoError(t, err)
	out := map[uint64]uint64{}
	for _, r := range recs {
		if r.Key == key {
			out[r.KeySeq] = r.Offset
		}
	}
	return out
}

// checkKeyReads reads key from every sequence first..last+1, whole and 3
// at a time, and compares with want (sequence -> offset).
func checkKeyReads(t *testing.T, f *Engine, key string, first, last uint64, want map[uint64]uint64) {
	t.Helper()
	for from := first; from <= last+1; from++ {
		got, err := f.ReadKey(0, key, from, 1<<20, 1<<30)
		require.NoError(t, err)
		require.Len(t, got, int(last+1-from), "from %d", from)
		for i, r := range got {
			require.Equal(t, from+uint64(i), r.KeySeq)
			require.Equal(t, want[r.KeySeq], r.Offset, "seq %d", r.KeySeq)
		}
		few, err := f.ReadKey(0, key, from, 3, 1<<30)
		require.NoError(t, err)
		require.Len(t, few, min(3, int(last+1-from)))
	}
	seq, err := f.KeySeq(0, key)
	require.NoError(t, err)
	require.Equal(t, last, seq)
}

// The state file's key index holds chunks of keyChunk offsets that flushes
// complete and extend: reads from every sequence find the right records,
// across chunk and flush boundaries, in the file and in the tables, before
// and after a restart, and erasure below a key's floor still reaches
// every record.
func TestFSMKeyIndexChunksAcrossFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	idx, id, seqA := uint64(0), 0, uint64(0)
	run := func(n int) {
		idx++
		var reqs []wire.Request
		for i := 0; i < n; i++ {
			id++
			reqs = append(reqs, req(0, "a", int64(seqA), id))
			seqA++
			id++
			reqs = append(reqs, req(0, "b", -1, id)) // a's offsets are not contiguous
		}
		f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), reqs...)})
	}
	for _, n := range []int{5, 11, 20, 16, 1, 40} {
		run(n)
		f.flush(false)
	}
	run(7) // in the active table only
	want := keyOffsets(t, f, 0, "a")
	require.Len(t, want, int(seqA))
	checkKeyReads(t, f, "a", 1, seqA, want)
	var chunks int
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		keys := tx.Bucket(partitionBucketName(0)).Bucket(bucketKeys)
		return eachKeyOffset(keys, "a", 1, func(seq, off uint64) (bool, error) {
			require.Equal(t, want[seq], off)
			if (seq-1)%keyChunk == 0 {
				chunks++
			}
			return true, nil
		})
	}))
	require.Equal(t, int(seqA-7+keyChunk-1)/keyChunk, chunks, "one index entry per chunk of flushed sequences")

	require.NoError(t, f.Close())
	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	flushed := seqA - 7 // the active table was flushed by close
	run(3)
	want = keyOffsets(t, f, 0, "a")
	checkKeyReads(t, f, "a", 1, seqA, want)
	require.Greater(t, seqA, flushed)
	// A retry finds each original through the index (a's seq s has ID 2s-1).
	for seq := uint64(1); seq <= seqA; seq++ {
		idx++
		out := f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), req(0, "a", -1, int(2*seq-1)))})
		require.Equal(t, fmt.Sprintf("p0@%d seq%d n1 dup=true idx=%d ", want[seq], seq, idx), outcomeString(out[0]))
	}

	// Truncate below 37 (inside the third chunk) and flush: the file keeps
	// no record of a below it, and reads start there.
	idx++
	f.ApplyBatch([]*raft.Log{entryLog(idx, int64(idx), keyOp(0, "a", -1, 37))})
	f.flush(false)
	recs := segmentRecords(t, f, 0)
	for seq, off := range want {
		require.Equal(t, seq >= 37, recs[off], "seq %d", seq)
	}
	got, err := f.ReadKey(0, "a", 1, 1<<20, 1<<30)
	require.NoError(t, err)
	require.Equal(t, uint64(37), got[0].KeySeq)
	require.Len(t, got, int(seqA-36))
}

// groupFSM applies group operations to a fresh FSM of 8 partitions, at
// times given in seconds.
type groupFSM struct {
	t   *testing.T
	f   *Engine
	idx uint64
}

func newGroupFSM(t *testing.T) *groupFSM {
	f, err := openTest(t.TempDir()+"/fsm.db", 0, 8, 1, time.Hour)
	require.NoError(t, err)
	g := &groupFSM{t: t, f: f}
	t.Cleanup(func() { g.f.Close() })
	return g
}

func (g *groupFSM) apply(sec int64, op wire.GroupOp) core.GroupOutcome {
	g.idx++
	data := wire.EncodeGroupEntry(sec*int64(time.Second), &op)
	out := g.f.ApplyBatch([]*raft.Log{{Index: g.idx, Term: 1, Type: raft.LogCommand, Data: data}})
	return out[0].(core.GroupOutcome)
}

func owners(s core.GroupState) string {
	out := ""
	for _, a := range s.Partitions {
		o := a.Owner
		if o == "" {
			o = "-"
		}
		if a.Revoking() {
			o += ">" + a.Next
		}
		out += o + " "
	}
	return out
}

func TestGroupMembershipAndFencing(t *testing.T) {
	g := newGroupFSM(t)
	const session = int64(10 * time.Second)
	join := func(sec int64, m string) core.GroupOutcome {
		return g.apply(sec, wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: m, Session: session})
	}
	hb := func(sec int64, m string, release ...core.Partition) core.GroupOutcome {
		return g.apply(sec, wire.GroupOp{Op: wire.GopHeartbeat, Group: "g", Member: m, Release: release})
	}
	commit := func(sec int64, m string, p core.Partition, gen, off uint64) core.GroupOutcome {
		return g.apply(sec, wire.GroupOp{Op: wire.GopCommit, Group: "g", Member: m, Commits: []core.OffsetCommit{{Partition: p, Generation: gen, Offset: off}}})
	}

	out := join(0, "a")
	require.NoError(t, out.Err)
	require.Equal(t, "a a a a a a a a ", owners(out.State))
	genA := out.State.Partitions[0].Generation
	require.Equal(t, uint64(1), out.State.Generation)

	// b joins: half of a's partitions are to move, but a keeps them until
	// it releases them: never two owners.
	out = join(1, "b")
	require.Equal(t, "a a a a a>b a>b a>b a>b ", owners(out.State))
	require.NoError(t, commit(2, "a", 5, genA, 40).Err, "the owner may commit before it releases")
	out = hb(3, "a", 4, 5, 6, 7)
	require.NoError(t, out.Err)
	require.Equal(t, "a a a a b b b b ", owners(out.State))
	genB := out.State.Partitions[5].Generation
	require.Greater(t, genB, genA)
	require.Equal(t, uint64(40), out.State.Partitions[5].Committed, "the new owner resumes where a stopped")

	// a's late commit to a partition it released is rejected.
	out = commit(4, "a", 5, genA, 50)
	var sge *core.StaleGenerationError
	require.ErrorAs(t, out.Err, &sge)
	require.Equal(t, core.StaleGenerationError{Group: "g", Member: "a", Partition: 5, Generation: genA, Current: genB, Owner: "b"}, *sge)
	require.NoError(t, commit(4, "b", 5, genB, 60).Err)
	out = commit(4, "b", 5, genB, 55)
	require.ErrorIs(t, out.Err, core.ErrCommitBehind)
	require.Equal(t, uint64(60), out.State.Partitions[5].Committed, "a commit never moves back")

	// b stops heartbeating (paused). a's heartbeats after b's session
	// expired hand b's partitions to a at once.
	require.NoError(t, hb(9, "a").Err)
	out = hb(15, "a")
	require.NoError(t, out.Err)
	require.Equal(t, "a a a a a a a a ", owners(out.State))
	require.Len(t, out.State.Members, 1)
	genA2 := out.State.Partitions[5].Generation

	// b comes back from its pause: its commits are rejected, its heartbeat
	// tells it to join again.
	require.ErrorAs(t, commit(16, "b", 5, genB, 70).Err, &sge)
	require.ErrorIs(t, hb(16, "b").Err, core.ErrUnknownMember)
	out = join(17, "b")
	require.Equal(t, "a a a a a>b a>b a>b a>b ", owners(out.State), "sticky: the same partitions move")
	out = hb(18, "a", 4, 5, 6, 7)
	genB2 := out.State.Partitions[5].Generation
	require.Greater(t, genB2, genA2)
	require.ErrorAs(t, commit(19, "b", 5, genB, 70).Err, &sge, "a grant from before the pause stays stale")
	require.NoError(t, commit(19, "b", 5, genB2, 70).Err)

	// Leaving hands partitions over at once.
	require.NoError(t, g.apply(20, wire.GroupOp{Op: wire.GopLeave, Group: "g", Member: "a"}).Err)
	s, ok := g.f.GroupState("g")
	require.True(t, ok)
	require.Equal(t, "b b b b b b b b ", owners(s))

	// Parking and retry are recorded with commits, fenced the same way.
	out = g.apply(21, wire.GroupOp{Op: wire.GopCommit, Group: "g", Member: "b", Commits: []core.OffsetCommit{{Partition: 2, Generation: s.Partitions[2].Generation, Offset: 9,
		Park: []core.ParkedRecord{{Offset: 7, Key: "k", Error: "boom", Attempts: 3}, {Offset: 8, Key: "k", Error: "behind 7"}}}}})
	require.NoError(t, out.Err)
	require.Len(t, out.State.Partitions[2].Parked, 2)
	out = g.apply(22, wire.GroupOp{Op: wire.GopRetry, Group: "g", Partition: 2, Offset: 7})
	require.True(t, out.State.Partitions[2].Parked[0].Retry)
	out = g.apply(23, wire.GroupOp{Op: wire.GopCommit, Group: "g", Member: "b", Commits: []core.OffsetCommit{{Partition: 2, Generation: s.Partitions[2].Generation, Offset: 9, Unpark: []uint64{7, 8}}}})
	require.Empty(t, out.State.Partitions[2].Parked)

	// The state survives a restart of the FSM.
	before, _ := g.f.GroupState("g")
	path := g.f.path
	require.NoError(t, g.f.Close())
	f, err := openTest(path, 0, 8, 1, time.Hour)
	require.NoError(t, err)
	g.f = f
	after, ok := f.GroupState("g")
	require.True(t, ok)
	require.Equal(t, before, after)
}
