package raftlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
)

func openSingle(t testing.TB, dir string, mod func(*Config)) *Log {
	t.Helper()
	cfg := Config{Dir: dir}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func rec(v string) NewRecord { return NewRecord{ID: uuid.New(), Value: []byte(v)} }

func TestSingleNodeRestartKeepsEveryRecord(t *testing.T) {
	dir := t.TempDir()
	l := openSingle(t, dir, nil)
	ctx := context.Background()
	type acked struct {
		res AppendResult
		ids []uuid.UUID
	}
	var mu sync.Mutex
	var all []acked
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				key := fmt.Sprintf("key-%d-%d", w, i%7)
				recs := []NewRecord{rec(fmt.Sprint(w, i)), rec("second")}
				res, err := l.Append(ctx, key, recs)
				if !(assertNoError(t, err)) {
					return
				}
				mu.Lock()
				all = append(all, acked{res, []uuid.UUID{recs[0].ID, recs[1].ID}})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.NoError(t, l.Close())

	l = openSingle(t, dir, nil)
	byID := map[uuid.UUID]Record{}
	total := 0
	for p := Partition(0); int(p) < l.Partitions(); p++ {
		recs := readAll(t, l, p)
		for i, r := range recs {
			require.Equal(t, uint64(i), r.Offset, "dense offsets")
			byID[r.ID] = r
		}
		total += len(recs)
		next, err := l.NextOffset(p)
		require.NoError(t, err)
		require.Equal(t, uint64(len(recs)), next)
	}
	require.Equal(t, 1600, total)
	for _, a := range all {
		for i, id := range a.ids {
			r, ok := byID[id]
			require.True(t, ok, "acknowledged record %s lost", id)
			require.Equal(t, a.res.FirstOffset+uint64(i), r.Offset)
			require.Equal(t, a.res.FirstKeySeq+uint64(i), r.KeySeq)
			require.Equal(t, a.res.Partition, r.Partition)
		}
	}
	// The log goes on where it stopped.
	res, err := l.Append(ctx, "key-0-0", []NewRecord{rec("after")}, ExpectKeySeq(2*15))
	require.NoError(t, err)
	require.Equal(t, uint64(31), res.FirstKeySeq)
}

// assertNoError reports err from a non-test goroutine.
func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func TestAppendRejectsBadInput(t *testing.T) {
	l := openSingle(t, t.TempDir(), func(c *Config) {
		c.MaxRecordBytes = 100
		c.MaxBatchRecords = 3
		c.MaxBatchBytes = 150
	})
	ctx := context.Background()
	id := uuid.New()
	cases := []struct {
		name string
		key  string
		recs []NewRecord
		opts []AppendOption
		want error
	}{
		{"empty key", "", []NewRecord{rec("x")}, nil, ErrEmptyKey},
		{"huge key", strings.Repeat("k", core.MaxKeyBytes+1), []NewRecord{rec("x")}, nil, ErrRecordTooLarge},
		{"empty batch", "k", nil, nil, ErrEmptyBatch},
		{"record too large", "k", []NewRecord{{Value: make([]byte, 101)}}, nil, ErrRecordTooLarge},
		{"headers count", "k", []NewRecord{{Value: make([]byte, 90), Headers: []Header{{Key: "h", Value: make([]byte, 10)}}}}, nil, ErrRecordTooLarge},
		{"too many records", "k", []NewRecord{rec("1"), rec("2"), rec("3"), rec("4")}, nil, ErrBatchTooLarge},
		{"batch too large", "k", []NewRecord{{Value: make([]byte, 80)}, {Value: make([]byte, 80)}}, nil, ErrBatchTooLarge},
		{"unknown partition", "k", []NewRecord{rec("x")}, []AppendOption{ToPartition(8)}, ErrUnknownPartition},
		{"negative partition", "k", []NewRecord{rec("x")}, []AppendOption{ToPartition(-1)}, ErrUnknownPartition},
		{"duplicate id", "k", []NewRecord{{ID: id}, {ID: id}}, nil, ErrDuplicateID},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Append(ctx, c.key, c.recs, c.opts...)
			require.ErrorIs(t, err, c.want)
		})
	}
	for p := Partition(0); int(p) < l.Partitions(); p++ {
		next, _ := l.NextOffset(p)
		require.Zero(t, next, "nothing appended by rejected input")
	}

	_, err := l.Append(ctx, "k", []NewRecord{rec("a")})
	require.NoError(t, err)
	_, err = l.Append(ctx, "k", []NewRecord{rec("b")}, ExpectKeySeq(0))
	var kse *KeySeqError
	require.ErrorAs(t, err, &kse)
	require.Equal(t, KeySeqError{Partition: l.Partition("k"), Key: "k", Expected: 0, Actual: 1}, *kse)
	seq, err := l.KeySeq(ctx, l.Partition("k"), "k")
	require.NoError(t, err)
	require.Equal(t, uint64(1), seq)

	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close is idempotent")
	_, err = l.Append(ctx, "k", []NewRecord{rec("c")})
	require.ErrorIs(t, err, ErrClosed)
	_, err = l.Read(ctx, 0, 0, ReadOptions{})
	require.ErrorIs(t, err, ErrClosed)
}

func TestAppendIsIdempotentByRecordID(t *testing.T) {
	l := openSingle(t, t.TempDir(), nil)
	ctx := context.Background()
	recs := []NewRecord{rec("a"), rec("b")}
	first, err := l.Append(ctx, "k", recs, ExpectKeySeq(0))
	require.NoError(t, err)
	require.False(t, first.Duplicate)
	again, err := l.Append(ctx, "k", recs, ExpectKeySeq(0))
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, first.FirstOffset, again.FirstOffset)
	require.Equal(t, first.FirstKeySeq, again.FirstKeySeq)
	require.Equal(t, first.Time, again.Time)
	_, err = l.Append(ctx, "k", []NewRecord{recs[1], rec("c")})
	require.ErrorIs(t, err, ErrIDConflict)
	next, _ := l.NextOffset(l.Partition("k"))
	require.Equal(t, uint64(2), next)

	// Records without IDs get one; the caller's slice is left alone.
	noID := []NewRecord{{Value: []byte("x")}}
	res, err := l.Append(ctx, "k", noID)
	require.NoError(t, err)
	require.Equal(t, uuid.Nil, noID[0].ID)
	got, err := l.ReadKey(ctx, res.Partition, "k", res.FirstKeySeq, ReadOptions{})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NotEqual(t, uuid.Nil, got[0].ID)
	require.Equal(t, uuid.Version(7), got[0].ID.Version())
}

func TestReadBounds(t *testing.T) {
	l := openSingle(t, t.TempDir(), nil)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{{Value: make([]byte, 100)}}, ToPartition(3))
		require.NoError(t, err)
	}
	recs, err := l.Read(ctx, 3, 2, ReadOptions{MaxRecords: 4})
	require.NoError(t, err)
	require.Len(t, recs, 4)
	require.Equal(t, uint64(2), recs[0].Offset)
	recs, err = l.Read(ctx, 3, 0, ReadOptions{MaxBytes: 350})
	require.NoError(t, err)
	require.Len(t, recs, 2, "bytes bound (stored records are ~125 bytes)")
	recs, err = l.Read(ctx, 3, 0, ReadOptions{MaxBytes: 1})
	require.NoError(t, err)
	require.Len(t, recs, 1, "at least one record")
	recs, err = l.ReadKey(ctx, 3, "k", 9, ReadOptions{})
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, uint64(9), recs[0].KeySeq)
	recs, err = l.ReadKey(ctx, 3, "kk", 0, ReadOptions{})
	require.NoError(t, err)
	require.Empty(t, recs, "a key that extends another is not mixed in")
	_, err = l.Read(ctx, 9, 0, ReadOptions{})
	require.ErrorIs(t, err, ErrUnknownPartition)
}

func TestWaitIsWokenByApply(t *testing.T) {
	l := openSingle(t, t.TempDir(), nil)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, 2, 0) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned before any record: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	res, err := l.Append(ctx, "k", []NewRecord{rec("x")}, ToPartition(2))
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait not woken by the append")
	}
	require.NoError(t, l.WaitApplied(ctx, res.Position))
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.Wait(short, 2, 1), context.DeadlineExceeded)
	go func() { done <- l.Wait(ctx, 2, 5) }()
	require.NoError(t, l.Close())
	require.ErrorIs(t, <-done, ErrClosed)
}

func TestGroupCommitCoalescesAppends(t *testing.T) {
	l := openSingle(t, t.TempDir(), nil)
	ctx := context.Background()
	before := l.shards[0].Raft.LastIndex()
	const n = 256
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := l.Append(ctx, fmt.Sprint("k", i), []NewRecord{rec("x")})
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	entries := l.shards[0].Raft.LastIndex() - before
	t.Logf("%d appends in %d raft entries", n, entries)
	require.Less(t, entries, uint64(n/4), "concurrent appends share raft entries")
}

func TestOpenChecksDataDirectory(t *testing.T) {
	dir := t.TempDir()
	l := openSingle(t, dir, nil)
	require.NoError(t, l.Close())
	_, err := Open(context.Background(), Config{Dir: dir, Partitions: 16})
	require.ErrorIs(t, err, ErrConfig)
	_, err = Open(context.Background(), Config{Dir: dir, NodeID: "other"})
	require.ErrorIs(t, err, ErrConfig)
	_, err = Open(context.Background(), Config{})
	require.ErrorIs(t, err, ErrConfig)
	_, err = Open(context.Background(), Config{Dir: t.TempDir(), Shards: 9})
	require.ErrorIs(t, err, ErrConfig)
	_, err = Open(context.Background(), Config{Dir: t.TempDir(), Join: "127.0.0.1:1"})
	require.ErrorIs(t, err, ErrConfig)
}

func TestStatus(t *testing.T) {
	l := openSingle(t, t.TempDir(), func(c *Config) { c.Partitions = 4; c.Shards = 2 })
	_, err := l.Append(context.Background(), "k", []NewRecord{rec("x")}, ToPartition(3))
	require.NoError(t, err)
	s := l.Status()
	require.Equal(t, "node1", s.NodeID)
	require.Len(t, s.Shards, 2)
	for _, g := range s.Shards {
		require.Equal(t, "Leader", g.State)
		require.Equal(t, "node1", g.LeaderID)
		require.LessOrEqual(t, g.AppliedIndex, g.CommitIndex)
		require.NotZero(t, g.Term)
		require.Len(t, g.Servers, 1)
	}
	require.Equal(t, []PartitionStatus{{0, 0, 0}, {1, 1, 0}, {2, 0, 0}, {3, 1, 1}}, s.Partitions)
	require.True(t, errors.Is(l.TransferLeadership(5, ""), ErrUnknownPartition))
}

// crash stops l the way a killed process would: raft and the stores stop,
// nothing is flushed, the in-memory table is lost.
func crash(t *testing.T, l *Log) {
	t.Helper()
	close(l.closing)
	for _, s := range l.shards {
		s.Batcher.Close()
		require.NoError(t, s.Raft.Shutdown().Error())
	}
	l.wg.Wait()
	for _, s := range l.shards {
		require.NoError(t, s.store.Close())
		require.NoError(t, s.engine.Probe().Crash())
	}
}

// Acknowledged appends survive a crash that loses the unflushed tables:
// raft hands the entries after its last snapshot back and they are
// re-applied, with the same offsets and key sequences. With a frozen table
// held unwritten at the crash, the file's index is the older table's.
func TestSingleNodeCrashLosesNothingAcknowledged(t *testing.T) {
	t.Run("active table", func(t *testing.T) { testCrashLosesNothing(t, false) })
	t.Run("frozen table", func(t *testing.T) { testCrashLosesNothing(t, true) })
}

func testCrashLosesNothing(t *testing.T, holdFrozen bool) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, flushRecords: 300} // some flushed, some only in the table
	ctx := context.Background()
	l, err := Open(ctx, cfg)
	require.NoError(t, err)
	probe := l.shards[0].engine.Probe()
	perWriter := 130
	var held <-chan struct{}
	if holdFrozen {
		// The first table is written; the second stays frozen until the
		// crash; the active one stays below the threshold (8 x 100 records).
		perWriter = 100
		held = probe.HoldFlushes(make(chan struct{}), 1)
	}
	var mu sync.Mutex
	acked := map[uuid.UUID]AppendResult{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				r := rec(fmt.Sprint(w, "-", i))
				res, err := l.Append(ctx, fmt.Sprintf("k%d-%d", w, i%5), []NewRecord{r})
				if !assertNoError(t, err) {
					return
				}
				mu.Lock()
				acked[r.ID] = res
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Less(t, probe.ActiveRecords(), 300)
	require.Positive(t, probe.ActiveRecords(), "the crash must lose a non-empty table")
	if holdFrozen {
		<-held
		frozenLast, frozen := probe.Frozen()
		require.True(t, frozen)
		fileApplied, err := probe.FileApplied()
		require.NoError(t, err)
		require.Less(t, fileApplied, frozenLast)
	}
	crash(t, l)

	l, err = Open(ctx, cfg)
	require.NoError(t, err)
	defer l.Close()
	// The replay happens as the node leads again; wait for the last append.
	var last AppendResult
	for _, res := range acked {
		if res.Position.Index > last.Position.Index {
			last = res
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, l.WaitApplied(wctx, last.Position))
	found := 0
	for p := Partition(0); int(p) < l.Partitions(); p++ {
		for i, r := range readAll(t, l, p) {
			require.Equal(t, uint64(i), r.Offset)
			res, ok := acked[r.ID]
			require.True(t, ok, "record %s was never acknowledged", r.ID)
			require.Equal(t, res.FirstOffset, r.Offset)
			require.Equal(t, res.FirstKeySeq, r.KeySeq)
			found++
		}
	}
	require.Equal(t, len(acked), found)
}

// Readers racing background flushes see every record exactly once, in
// offset order, across the boundaries between the file, the frozen table
// being written and the active table.
func TestReadsDuringFlushes(t *testing.T) {
	longTest(t)
	l := openSingle(t, t.TempDir(), func(c *Config) { c.flushRecords = 37 })
	ctx := context.Background()
	const n = 1500
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				recs, err := l.Read(ctx, 0, 0, ReadOptions{MaxRecords: n})
				if !assertNoError(t, err) {
					return
				}
				for i, rc := range recs {
					if rc.Offset != uint64(i) || rc.KeySeq != uint64(i)+1 {
						t.Errorf("read %d: record %d has offset %d key sequence %d", len(recs), i, rc.Offset, rc.KeySeq)
						return
					}
				}
				if len(recs) > 0 {
					byKey, err := l.ReadKey(ctx, 0, "k", 1, ReadOptions{MaxRecords: n})
					if !assertNoError(t, err) {
						return
					}
					if len(byKey) < len(recs) {
						t.Errorf("ReadKey saw %d records after Read saw %d", len(byKey), len(recs))
						return
					}
				}
			}
		}()
	}
	for i := 0; i < n; i += 10 {
		recs := make([]NewRecord, 10)
		for j := range recs {
			recs[j] = rec(fmt.Sprint(i + j))
		}
		_, err := l.Append(ctx, "k", recs, ToPartition(0), ExpectKeySeq(uint64(i)))
		require.NoError(t, err)
	}
	close(stop)
	readers.Wait()
	recs := readAll(t, l, 0)
	require.Len(t, recs, n)
	seq, err := l.KeySeq(ctx, 0, "k")
	require.NoError(t, err)
	require.Equal(t, uint64(n), seq)
}

// A full copy of the state being streamed to a lagging follower, however
// slowly, does not hold up appends (or the flushes they trigger).
func TestSnapshotStreamDoesNotBlockAppends(t *testing.T) {
	l := openSingle(t, t.TempDir(), func(c *Config) { c.flushRecords = 5 })
	ctx := context.Background()
	_, err := l.Append(ctx, "k", []NewRecord{rec("before")})
	require.NoError(t, err)
	stream, _, err := l.shards[0].engine.Probe().OpenFullCopy()
	require.NoError(t, err)
	defer stream.Close()
	_, err = stream.Read(make([]byte, 100)) // started, and left hanging
	require.NoError(t, err)
	for i := 0; i < 20; i++ { // several flushes' worth
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.Append(actx, "k", []NewRecord{rec(fmt.Sprint(i))})
		cancel()
		require.NoError(t, err, "append %d while a snapshot stream is open", i)
	}
}

// A state file behind the node's own latest snapshot marker (here an old
// copy put back in its place) is not the file the marker was taken from:
// the entries in between may be compacted away, and raft would not replay
// them anyway. Open refuses it instead of running on a state with a hole.
func TestOpenRefusesStateFileBehindSnapshot(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l := openSingle(t, dir, nil)
	_, err := l.Append(ctx, "k", []NewRecord{rec("1")})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	state := filepath.Join(dir, "g0", "state.db")
	old, err := os.ReadFile(state)
	require.NoError(t, err)

	l = openSingle(t, dir, nil)
	for i := 0; i < 10; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{rec("more")})
		require.NoError(t, err)
	}
	require.NoError(t, l.shards[0].Raft.Snapshot().Error())
	require.NoError(t, l.Close())
	require.NoError(t, os.WriteFile(state, old, 0o600))

	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = Open(octx, Config{Dir: dir})
	require.ErrorIs(t, err, core.ErrCorrupt)
	require.ErrorContains(t, err, "behind snapshot marker")
}

// A new group's raft log is a WAL unless Config.LogStore says bolt; a
// group reopens with the store it was created with, and naming the other
// one, or an unknown one, is an ErrConfig that leaves the log untouched.
func TestLogStoreIsChosenOnceAndKept(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		create, other LogStore
		holds         string
	}{
		{"", LogStoreBolt, filepath.Join("g0", walLogDir, "wal-meta.db")},
		{LogStoreBolt, LogStoreWAL, filepath.Join("g0", boltLogFile)},
	} {
		t.Run(fmt.Sprintf("create=%q", tc.create), func(t *testing.T) {
			dir := t.TempDir()
			l := openSingle(t, dir, func(c *Config) { c.LogStore = tc.create })
			_, err := l.Append(ctx, "k", []NewRecord{rec("a"), rec("b")})
			require.NoError(t, err)
			require.NoError(t, l.Close())
			require.FileExists(t, filepath.Join(dir, tc.holds))

			_, err = Open(ctx, Config{Dir: dir, LogStore: tc.other})
			require.ErrorIs(t, err, ErrConfig)
			_, err = Open(ctx, Config{Dir: dir, LogStore: "zip"})
			require.ErrorIs(t, err, ErrConfig)

			l = openSingle(t, dir, nil) // the default keeps what is there
			_, err = l.Append(ctx, "k", []NewRecord{rec("c")})
			require.NoError(t, err)
			var got []string
			for p := Partition(0); int(p) < l.Partitions(); p++ {
				for _, r := range readAll(t, l, p) {
					got = append(got, string(r.Value))
				}
			}
			require.Equal(t, []string{"a", "b", "c"}, got)
		})
	}
}

// A raft log that ends below what the state file has applied (lost,
// truncated or replaced) is refused at start with a message naming the
// recovery, instead of running, or bootstrapping again, on a shorter
// history.
func TestOpenRefusesRaftLogBehindState(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l := openSingle(t, dir, nil)
	for i := 0; i < 5; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{rec(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "g0", "wal")))

	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := Open(octx, Config{Dir: dir})
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "the raft log ends at index 0")
	require.ErrorContains(t, err, "Recovery")
}

// A raft-wal log that ends below its newest snapshot lost its last
// entries: raft-wal reads damage in its last segment as a torn write and
// drops everything after it, entries this node acknowledged among them.
// Open refuses it instead of letting the node vote with the shorter log
// (bug 13: a fault run lost acknowledged writes that way).
func TestOpenRefusesRaftLogCutBelowSnapshot(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l := openSingle(t, dir, func(c *Config) { c.TrailingLogs = 1024 })
	l.closeOnce.Do(func() {}) // crash() below stands in for Close
	for i := 0; i < 20; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{rec(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	require.NoError(t, l.shards[0].Raft.Snapshot().Error())
	snapIdx := l.shards[0].Raft.LastIndex()
	for i := 0; i < 5; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{rec(fmt.Sprint("after-", i))})
		require.NoError(t, err)
	}
	crash(t, l) // the entries after the snapshot are in the raft log only

	// What raft-wal does with damage in its last segment a few entries
	// before the snapshot: the log now ends there.
	cfg := Config{Dir: dir}
	store, err := openShardLog(filepath.Join(dir, "g0"), &cfg, hclog.NewNullLogger())
	require.NoError(t, err)
	last, err := store.LastIndex()
	require.NoError(t, err)
	require.Greater(t, last, snapIdx)
	require.NoError(t, store.DeleteRange(snapIdx-3, last))
	require.NoError(t, store.Close())

	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = Open(octx, Config{Dir: dir})
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, fmt.Sprintf("below its newest snapshot at index %d", snapIdx))
	require.ErrorContains(t, err, "Recovery")
}

// An append of records without IDs gets a run of IDs, which the ID index
// keeps as one entry; each ID is still located and deduplicated.
func TestAppendWithoutIDsIsOneIndexEntry(t *testing.T) {
	l := openSingle(t, t.TempDir(), nil)
	ctx := context.Background()
	recs := make([]NewRecord, 64)
	for i := range recs {
		recs[i].Value = []byte{byte(i)}
	}
	var got []Record
	for _, key := range []string{"a", "b", "c"} {
		res, err := l.Append(ctx, key, recs, ToPartition(0))
		require.NoError(t, err)
		rs, err := l.Read(ctx, 0, res.FirstOffset, ReadOptions{MaxRecords: 64})
		require.NoError(t, err)
		got = append(got, rs...)
	}
	entries := 0
	for _, s := range l.shards {
		_, err := s.engine.Flush()
		require.NoError(t, err)
		n, err := s.engine.FlushedIDCount()
		require.NoError(t, err)
		entries += n
	}
	require.Equal(t, 3, entries, "one ID index entry per append")
	for _, r := range got {
		p, off, found, err := l.LocateID(r.ID)
		require.NoError(t, err)
		require.True(t, found, "%s", r.ID)
		require.Equal(t, []any{r.Partition, r.Offset}, []any{p, off})
	}
	again := []NewRecord{{ID: got[70].ID, Value: []byte("x")}, {ID: got[71].ID, Value: []byte("y")}}
	res, err := l.Append(ctx, "b", again, ToPartition(0))
	require.NoError(t, err)
	require.True(t, res.Duplicate, "two IDs from the middle of a run are found as a retry")
	require.Equal(t, got[70].Offset, res.FirstOffset)
}
