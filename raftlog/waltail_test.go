package raftlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/stretchr/testify/require"
)

// writeWAL appends batches of entries to a new raft-wal log in dir, one
// StoreLogs (one append, one commit frame) per batch, and closes it. It
// returns the last index written.
func writeWAL(t testing.TB, dir string, batches []int, size int) uint64 {
	t.Helper()
	w, err := wal.Open(dir)
	require.NoError(t, err)
	idx := uint64(0)
	for _, n := range batches {
		logs := make([]*raft.Log, n)
		for i := range logs {
			idx++
			data := make([]byte, size)
			for j := range data {
				data[j] = byte('a' + (int(idx)+j)%26)
			}
			logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
		}
		require.NoError(t, w.StoreLogs(logs))
	}
	require.NoError(t, w.Close())
	return idx
}

// walLastIndex opens dir with raft-wal, as a node would without the
// check, and returns the last index it recovered.
func walLastIndex(t *testing.T, dir string) uint64 {
	t.Helper()
	w, err := wal.Open(dir)
	require.NoError(t, err)
	defer w.Close()
	last, err := w.LastIndex()
	require.NoError(t, err)
	return last
}

// walFrames lists the offsets of the entry and commit frames of the last
// segment in dir, in order, with the segment's path.
func walFrames(t *testing.T, dir string) (path string, entries, commits []int) {
	t.Helper()
	path, err := lastWALSegment(dir)
	require.NoError(t, err)
	require.NotEmpty(t, path)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for off := walFileHeaderLen; ; {
		typ, _, next, ok := walFrame(b, off)
		if !ok {
			return path, entries, commits
		}
		switch typ {
		case walFrameEntry:
			entries = append(entries, off)
		case walFrameCommit:
			commits = append(commits, off)
		}
		off = next
	}
}

func patchFile(t *testing.T, path string, off int, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, int64(off))
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// TestWALTailDamageBeforeSyncedAppendsIsRefused: raft-wal reads a damaged
// frame header in its last segment as the end of a torn write and drops
// every append after it, synced and acknowledged ones too. checkWALTail
// finds those appends past the cut and refuses the log; what a torn write
// leaves (the last append's frames) it lets through, as raft-wal does.
func TestWALTailDamageBeforeSyncedAppendsIsRefused(t *testing.T) {
	batches := []int{3, 3, 3, 3, 3, 3, 3, 3, 3, 3} // 10 appends of 3 entries
	t.Run("a damaged entry header with appends after it", func(t *testing.T) {
		dir := t.TempDir()
		last := writeWAL(t, dir, batches, 100)
		path, entries, _ := walFrames(t, dir)
		require.Len(t, entries, 30)
		patchFile(t, path, entries[10], []byte{0x7f}) // the 4th append's second entry
		require.NoError(t, checkWALTail(t.TempDir()), "an empty directory")

		err := checkWALTail(dir)
		require.ErrorIs(t, err, ErrCorrupt)
		require.ErrorContains(t, err, fmt.Sprintf("damaged at byte %d: raft-wal would drop everything from byte %d", entries[10], entries[9]),
			"the damage, and the cut after the 3rd append's commit")
		require.ErrorContains(t, err, "Recovery")
		// What the check prevents: raft-wal opens the log cut after the
		// third append, 21 entries short, without a word.
		require.Equal(t, uint64(9), walLastIndex(t, dir))
		require.Equal(t, uint64(30), last)
	})
	t.Run("a damaged commit header with appends after it", func(t *testing.T) {
		dir := t.TempDir()
		writeWAL(t, dir, batches, 100)
		path, _, commits := walFrames(t, dir)
		patchFile(t, path, commits[5]+1, []byte{1}) // a reserved byte
		require.ErrorIs(t, checkWALTail(dir), ErrCorrupt)
	})
	t.Run("the last append torn", func(t *testing.T) {
		dir := t.TempDir()
		writeWAL(t, dir, batches, 100)
		path, entries, _ := walFrames(t, dir)
		patchFile(t, path, entries[28]+walFrameHeaderLen+5, []byte("torn")) // its checksum fails
		require.NoError(t, checkWALTail(dir))
		require.Equal(t, uint64(27), walLastIndex(t, dir), "raft-wal drops the torn append")
	})
	t.Run("the next-to-last append's header damaged", func(t *testing.T) {
		// One commit frame past the cut: told apart from a torn write
		// only by what the log lost, which this check cannot see.
		dir := t.TempDir()
		writeWAL(t, dir, batches, 100)
		path, entries, _ := walFrames(t, dir)
		patchFile(t, path, entries[27], []byte{0x7f})
		require.NoError(t, checkWALTail(dir))
	})
	t.Run("a torn write's leftovers under later appends", func(t *testing.T) {
		// A long append torn (its middle never written), the log reopened
		// and appended to: the new appends overwrite the torn one's start
		// and its end stays in the file, a commit frame among it.
		dir := t.TempDir()
		writeWAL(t, dir, []int{3, 3, 40}, 100)
		path, entries, _ := walFrames(t, dir)
		patchFile(t, path, entries[20], make([]byte, 400))
		require.NoError(t, checkWALTail(dir))
		w, err := wal.Open(dir)
		require.NoError(t, err)
		last, err := w.LastIndex()
		require.NoError(t, err)
		require.Equal(t, uint64(6), last)
		for i := uint64(7); i <= 9; i++ {
			require.NoError(t, w.StoreLogs([]*raft.Log{{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte("new")}}))
		}
		require.NoError(t, w.Close())
		require.NoError(t, checkWALTail(dir))
		require.Equal(t, uint64(9), walLastIndex(t, dir))
	})
	t.Run("an intact log", func(t *testing.T) {
		dir := t.TempDir()
		writeWAL(t, dir, batches, 100)
		require.NoError(t, checkWALTail(dir))
	})
}

// TestOpenRefusesWALTailCutAfterSnapshot is bug 13's remaining case: the
// damage is in entries after the node's last snapshot, with its state file
// not flushed past them, so the other open checks see a log that merely
// ends early. Open refuses it.
func TestOpenRefusesWALTailCutAfterSnapshot(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l := openSingle(t, dir, nil)
	l.closeOnce.Do(func() {}) // crash() below stands in for Close
	for i := 0; i < 5; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{rec(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	require.NoError(t, l.shards[0].Raft.Snapshot().Error())
	for i := 0; i < 10; i++ {
		_, err := l.Append(ctx, "k", []NewRecord{rec(fmt.Sprint("after-", i))})
		require.NoError(t, err)
	}
	crash(t, l)

	wdir := filepath.Join(dir, "g0", walLogDir)
	path, entries, _ := walFrames(t, wdir)
	patchFile(t, path, entries[len(entries)-6], []byte{0x7f})
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := Open(octx, Config{Dir: dir})
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "appends synced after the damage follow it")
}

// FuzzWALTail reads arbitrary bytes as raft-wal's last segment: the scan
// never panics, ends, and its cut lies within the bytes.
func FuzzWALTail(f *testing.F) {
	dir := f.TempDir()
	writeWAL(f, dir, []int{2, 1, 3}, 40)
	if path, err := lastWALSegment(dir); err == nil && path != "" {
		if b, err := os.ReadFile(path); err == nil {
			f.Add(b[:min(len(b), 4096)])
		}
	}
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		cut, stop := walRecoveredEnd(b)
		if cut > max(len(b), walFileHeaderLen) || stop < walFileHeaderLen {
			t.Fatalf("cut %d, stop %d for %d bytes", cut, stop, len(b))
		}
		if at, ok := walCommittedPast(b, cut); ok && (at < cut || at+walFrameHeaderLen > len(b)) {
			t.Fatalf("a commit frame at %d, outside %d..%d", at, cut, len(b))
		}
	})
}
