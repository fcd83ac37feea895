package raftlog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

type inmemLog struct{ *raft.InmemStore }

func (inmemLog) Close() error { return nil }

func TestCheckedLogDetectsDamage(t *testing.T) {
	inner := inmemLog{raft.NewInmemStore()}
	// Entries 1-2 predate checksums: stored without them.
	for i := uint64(1); i <= 2; i++ {
		require.NoError(t, inner.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte("old")}))
	}
	c, err := newCheckedLog(inner, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	orig := []*raft.Log{
		{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("three")},
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: []byte("four"), Extensions: []byte("ext")},
	}
	require.NoError(t, c.StoreLogs(orig))
	require.Nil(t, orig[0].Extensions, "raft's own entries are not changed")

	var got raft.Log
	for i := uint64(1); i <= 4; i++ {
		require.NoError(t, c.GetLog(i, &got))
	}
	require.Equal(t, []byte("ext"), got.Extensions, "the original extensions come back")
	require.NoError(t, verifyLogFrom(c, 1))

	// A reopened store remembers where checksums start.
	c2, err := newCheckedLog(inner, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, uint64(3), c2.from)

	// Damage entry 3's data in the inner store: the CRC no longer matches.
	var stored raft.Log
	require.NoError(t, inner.GetLog(3, &stored))
	stored.Data = []byte("thrEe")
	require.NoError(t, inner.StoreLog(&stored))
	require.Equal(t, raft.ErrLogNotFound, c2.GetLog(3, &got), "raft sees a damaged entry as missing")
	err = c2.getChecked(3, &got)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), "raft log entry 3")
	err = verifyLogFrom(c2, 1)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), "Recovery")
	require.NoError(t, verifyLogFrom(c2, 4), "entries before from are not read")

	// An entry past the mark that lost its checksum is damaged too.
	require.NoError(t, inner.GetLog(4, &stored))
	stored.Extensions = nil
	require.NoError(t, inner.StoreLog(&stored))
	require.ErrorIs(t, c2.getChecked(4, &got), ErrCorrupt)
}

// TestOpenRefusesDamagedRaftEntry is bug 9 of RELIABILITY.md on one node:
// a byte flipped in a raft log entry that the node would hand its state
// machine again is found at Open, which refuses to start with ErrCorrupt
// and names the recovery, instead of applying the damaged bytes.
func TestOpenRefusesDamagedRaftEntry(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, Partitions: 1, Shards: 1}
	l, err := Open(context.Background(), cfg)
	require.NoError(t, err)
	marker := []byte("bug-nine-marker-value")
	for i := 0; i < 3; i++ {
		_, err = l.Append(context.Background(), "k", []NewRecord{{Value: marker}})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())

	// Flip one byte of the marker wherever the raft log holds it.
	flipped := 0
	require.NoError(t, filepath.Walk(filepath.Join(dir, "g0", walLogDir), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || filepath.Ext(p) != ".wal" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, marker); i >= 0 {
			b[i+3] ^= 0x20
			flipped++
			return os.WriteFile(p, b, info.Mode())
		}
		return nil
	}))
	require.Equal(t, 1, flipped, "the marker is in one WAL segment")

	_, err = Open(context.Background(), cfg)
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrCorrupt), "ErrCorrupt, got %v", err)
	require.Contains(t, err.Error(), "Recovery")
}

// TestVerifyReadsTheLastEntry: an entry the store lists as its last but no
// longer holds (a log cut short) is found even when every entry is below
// the range to verify, with the recovery named.
func TestVerifyReadsTheLastEntry(t *testing.T) {
	inner := inmemLog{raft.NewInmemStore()}
	c, err := newCheckedLog(inner, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, c.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Data: []byte("a")}, {Index: 2, Term: 1, Data: []byte("b")}}))
	require.NoError(t, verifyLogFrom(c, 3))
	require.NoError(t, inner.DeleteRange(2, 2))
	require.NoError(t, inner.StoreLog(&raft.Log{Index: 2, Term: 1, Data: []byte("b")})) // stored without a checksum
	err = verifyLogFrom(c, 3)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), "Recovery")
}
