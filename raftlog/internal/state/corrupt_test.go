package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// The scenario 3 (#16): the state files are verified, never
// trusted. Each test damages a closed engine's files as an operator or a
// failing disk would, and checks that the damage is an ErrCorrupt naming
// the file (at Open, or at the read that meets it), never a wrong value,
// a panic or a fault.

// filledEngine opens an engine in a new directory with records of keys
// "a" (partition 0) and "b" (partition 1) flushed to its files, and
// closes it. It returns the index file's path.
func filledEngine(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	var reqs []wire.Request
	for i := 1; i <= 40; i++ {
		reqs = append(reqs, req(0, "a", -1, i), req(1, "b", -1, 100+i))
	}
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, reqs...)})
	require.NoError(t, f.Close())
	return path
}

func requireCorrupt(t *testing.T, err error, file string) {
	t.Helper()
	require.ErrorIs(t, err, core.ErrCorrupt)
	require.ErrorContains(t, err, file)
}

// requireOpenRefused checks that opening the engine at path fails with an
// ErrCorrupt naming file and containing each of msgs.
func requireOpenRefused(t *testing.T, path, file string, msgs ...string) {
	t.Helper()
	_, err := openTest(path, 0, 4, 1, time.Hour)
	requireCorrupt(t, err, file)
	for _, m := range msgs {
		require.ErrorContains(t, err, m)
	}
}

// A stored value edited on disk (value-17 made value-99, checksums left
// alone) is never returned: every read that reaches it fails with a
// CorruptError naming the segment file and position, the engine reports
// the damage, and the other partition reads as before.
func TestEditedRecordIsDetected(t *testing.T) {
	path := filledEngine(t)
	seg := filepath.Join(filepath.Dir(path), "p0", segmentName(0))
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	at := bytes.Index(b, []byte("value-17"))
	require.Positive(t, at)
	copy(b[at:], "value-99")
	require.NoError(t, os.WriteFile(seg, b, 0o600))

	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err, "the lengths are whole: damage inside a frame is found when it is read")
	defer f.Close()
	require.NoError(t, f.Damage())

	recs, err := f.Read(0, 0, 100, 1<<20)
	requireCorrupt(t, err, seg)
	var ce *CorruptError
	require.True(t, errors.As(err, &ce))
	require.Equal(t, uint64(16), ce.Record, "offset 16 holds a17")
	require.Positive(t, ce.Offset)
	for _, r := range recs {
		require.NotEqual(t, "value-99", string(r.Value))
	}
	_, err = f.ReadKey(0, "a", 17, 1, 1<<20)
	requireCorrupt(t, err, seg)
	got, err := f.ReadKey(0, "a", 1, 16, 1<<20)
	require.NoError(t, err, "the records before it read")
	require.Len(t, got, 16)
	require.ErrorIs(t, f.Damage(), core.ErrCorrupt)

	got, err = f.Read(1, 0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 40)
}

// A value of the index edited on disk without its checksum (here the key
// index chunk of "a") fails reads with ErrCorrupt naming the index file,
// and an apply that needs it stops applies on this replica (no panic, no
// divergence) until the shard closes.
func TestEditedIndexValueIsDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, req(0, "a", -1, 1, 2, 3))})
	require.NoError(t, f.Close())

	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(partitionBucketName(0)).Bucket(bucketKeys)
		k, v := keys.Cursor().First()
		edited := bytes.Clone(v)
		edited[7] ^= 1 // the first offset, 0, becomes 1
		return keys.Put(bytes.Clone(k), edited)
	}))
	require.NoError(t, db.Close())

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	_, err = f.ReadKey(0, "a", 1, 10, 1<<20)
	requireCorrupt(t, err, path)
	_, err = f.KeySeq(0, "a")
	requireCorrupt(t, err, path)

	done := make(chan []any)
	go func() { done <- f.ApplyBatch([]*raft.Log{entryLog(2, 2, req(0, "a", 3, 4))}) }()
	wait.Until(t, 10*time.Second, "the damage reported", func() bool { return f.Damage() != nil })
	require.ErrorIs(t, f.Damage(), core.ErrCorrupt)
	select {
	case <-done:
		t.Fatal("an apply that cannot read its state returned before Halt")
	default:
	}
	f.Halt()
	require.Equal(t, []any{nil}, <-done, "released by Halt, with no outcome")
	require.Equal(t, uint64(1), f.Applied(), "nothing of the entry was applied")
	require.NoError(t, f.Close())
}

// A truncated index file fails Open with an ErrCorrupt that names it and
// the recovery, instead of a fault (SIGBUS) when bbolt maps it.
func TestTruncatedIndexFileFailsOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	var reqs []wire.Request
	for i := 1; i <= 2000; i++ {
		reqs = append(reqs, req(0, "a", -1, i))
	}
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, reqs...)})
	require.NoError(t, f.Close())
	require.NoError(t, os.Truncate(path, int64(4*os.Getpagesize())), "2,000 records' index takes more pages")

	requireOpenRefused(t, path, path, "truncated", "rejoins the cluster")
}

// Damaged pages of the index file (every page after the two meta pages
// overwritten) give an ErrCorrupt naming the file, not a panic of bbolt.
func TestDamagedIndexPagesFailOpen(t *testing.T) {
	path := filledEngine(t)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	page := os.Getpagesize()
	for i := 2 * page; i < len(b); i++ {
		b[i] = byte(i*7 + 3)
	}
	require.NoError(t, os.WriteFile(path, b, 0o600))
	requireOpenRefused(t, path, path)
}

// A segment shorter than the length the index records lost acknowledged
// records: Open fails naming the file and the recovery.
func TestShortSegmentFailsOpen(t *testing.T) {
	path := filledEngine(t)
	seg := filepath.Join(filepath.Dir(path), "p1", segmentName(0))
	st, err := os.Stat(seg)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(seg, st.Size()-5))
	requireOpenRefused(t, path, seg, "lost data", "rejoins the cluster")
}

// Bytes past a segment's recorded length and segment files the index does
// not list are what a flush that did not commit leaves: Open truncates
// and removes them, and the state reads as it was.
func TestOpenDropsUncommittedSegmentBytes(t *testing.T) {
	path := filledEngine(t)
	dir := filepath.Dir(path)
	seg := filepath.Join(dir, "p0", segmentName(0))
	before, err := os.ReadFile(seg)
	require.NoError(t, err)
	fh, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fh.Write(appendFrame(nil, []byte("a torn frame that was never covered")))
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	extra := filepath.Join(dir, "p0", segmentName(40))
	require.NoError(t, os.WriteFile(extra, segmentHeader(0, 40), 0o600))

	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	after, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.NoFileExists(t, extra)
	recs, err := f.Read(0, 0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 40)
	require.NoError(t, f.Damage())
}

// Sixteen bytes flipped in any one page of an index with branch pages
// (the fault suite's corrupt-state) never crash Open: it either opens (the
// damage is found later, by a read or the scrub) or fails with an error.
// bbolt rebuilt an unsynced freelist at open by walking every page in a
// goroutine of its own and panicked there on a key out of order, where no
// recover can reach (RELIABILITY.md, bug 14); the index now keeps its
// freelist synced, so Open reads it instead of walking the tree.
func TestFlippedIndexPageNeverCrashesOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	var reqs []wire.Request
	for i := 1; i <= 3000; i++ {
		reqs = append(reqs, req(core.Partition(i%4), fmt.Sprintf("key-%04d", i%700), -1, i))
	}
	f.ApplyBatch([]*raft.Log{entryLog(1, 1, reqs...)})
	require.NoError(t, f.Close())
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	page := os.Getpagesize()
	// The file is preallocated (16 MiB); the index's pages come first.
	pages := min(len(orig)/page, 160)
	require.Greater(t, pages, 8)
	opened, refused := 0, 0
	for p := 2; p < pages; p++ {
		for _, at := range []int{16, 40, page / 2} {
			b := bytes.Clone(orig)
			for i := range 16 {
				b[p*page+at+i] ^= 0xA5
			}
			require.NoError(t, os.WriteFile(path, b, 0o600))
			e, err := openTest(path, 0, 4, 1, time.Hour)
			if err != nil {
				refused++
				continue
			}
			opened++
			e.Close()
		}
	}
	t.Logf("%d pages: %d damaged copies opened, %d refused", pages-2, opened, refused)
}
