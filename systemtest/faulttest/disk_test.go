package faulttest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeNodeDir lays out a node's data directory as raftlog does, with
// recognizable contents: two raft log segments preallocated past their
// data, raft-wal's metadata, a state file, a snapshot and raftlog.json.
func fakeNodeDir(t *testing.T) (string, map[string][]byte) {
	dir := t.TempDir()
	files := map[string][]byte{
		"raftlog.json":                        []byte(`{"id":"n1"}`),
		"g0/wal/00000000000000000001-00.wal":  append(bytes.Repeat([]byte{1}, 4000), make([]byte, 8192)...),
		"g0/wal/00000000000000000900-00.wal":  append(bytes.Repeat([]byte{2}, 6000), make([]byte, 8192)...),
		"g0/wal/wal-meta.db":                  bytes.Repeat([]byte{3}, 4096),
		"g0/fsm.db":                           bytes.Repeat([]byte{4}, 8192),
		"g0/snapshots/1-2-3/state.bin":        bytes.Repeat([]byte{5}, 100),
		"consumer.jsonl":                      []byte("{}\n"),
		"g0/p0/00000000000000000000.seg.test": bytes.Repeat([]byte{6}, 300),
	}
	for rel, b := range files {
		path := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
		require.NoError(t, os.WriteFile(path, b, 0o600))
	}
	return dir, files
}

// changed lists the files of dir whose contents differ from files.
func changed(t *testing.T, dir string, files map[string][]byte) []string {
	var out []string
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, rel))
		require.NoError(t, err)
		if !bytes.Equal(got, want) {
			out = append(out, rel)
		}
	}
	return out
}

func TestDamageHitsTheNamedRegion(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	oldSeg, newSeg := "g0/wal/00000000000000000001-00.wal", "g0/wal/00000000000000000900-00.wal"
	for range 20 {
		dir, files := fakeNodeDir(t)
		_, err := damage(FaultCorruptLogOld, dir, rng)
		require.NoError(t, err)
		require.Equal(t, []string{oldSeg}, changed(t, dir, files))
		got, _ := os.ReadFile(filepath.Join(dir, oldSeg))
		i := bytes.IndexFunc(got, func(r rune) bool { return r != 1 })
		require.Less(t, i, 2000, "old region: the segment's first half")
		require.Equal(t, got[4000:], files[oldSeg][4000:], "nothing past the data")

		dir, files = fakeNodeDir(t)
		_, err = damage(FaultCorruptLogNew, dir, rng)
		require.NoError(t, err)
		require.Equal(t, []string{newSeg}, changed(t, dir, files))
		got, _ = os.ReadFile(filepath.Join(dir, newSeg))
		i = bytes.IndexFunc(got, func(r rune) bool { return r != 2 })
		require.GreaterOrEqual(t, i, 6000-4096, "new region: the last 4 KiB written")

		dir, files = fakeNodeDir(t)
		_, err = damage(FaultTruncateLog, dir, rng)
		require.NoError(t, err)
		require.Equal(t, []string{newSeg}, changed(t, dir, files))
		st, _ := os.Stat(filepath.Join(dir, newSeg))
		require.True(t, st.Size() >= 3000 && st.Size() < 6000, "cut within its written half: %d", st.Size())

		for _, kind := range []string{FaultCorruptState, FaultTruncateState} {
			dir, files = fakeNodeDir(t)
			_, err = damage(kind, dir, rng)
			require.NoError(t, err)
			ch := changed(t, dir, files)
			require.Len(t, ch, 1)
			require.Contains(t, []string{"g0/fsm.db", "g0/p0/00000000000000000000.seg.test"}, ch[0], "%s: a state file only", kind)
		}
	}
}

// TestFillDisk fills a tmpfs of its own (it needs root, as CI runs) and
// checks that nothing more can be written until the filler is removed.
func TestFillDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	require.NoError(t, mountTmpfs(dir, 4<<20))
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "before"), []byte("x"), 0o600))
	n, err := fillDisk(dir)
	require.NoError(t, err)
	require.Greater(t, n, int64(3<<20))
	err = os.WriteFile(filepath.Join(dir, "during"), make([]byte, 8192), 0o600)
	require.True(t, errors.Is(err, syscall.ENOSPC), "a write on the full disk: %v", err)
	require.NoError(t, unfillDisk(dir))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "after"), make([]byte, 8192), 0o600))
}
