package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// checkedLog gives every raft log entry a CRC-32C of its own, written with
// the entry and verified whenever the entry is read back. Neither log store
// checks what it reads: raft-wal's CRC covers a write only while it is the
// tail being recovered, and bolt checks nothing, so a byte flipped in an
// old entry was handed to raft as it was. A follower that re-applied such
// an entry after a restart silently diverged from its peers, and lost
// acknowledged writes once it led (RELIABILITY.md, bug 9).
//
// The CRC travels in the stored entry's Extensions, ahead of raft's own
// (checkMagic, 4 bytes of CRC, then the original Extensions), in a copy:
// raft's in-memory entries and what it sends to followers are unchanged.
// It covers the index, term, type, data and original extensions. Entries
// stored before a shard had checksums carry none; the stable-store key
// checkedFromKey holds the first index written with one, and every entry
// from there on must carry a valid one.
type checkedLog struct {
	groupLog
	from   uint64 // first index written with a CRC; 0: none yet
	logger *slog.Logger
	// writes is the duration of each StoreLogs, in nanoseconds (the
	// shard's log store write latency, stats.go).
	writes *core.Histogram
}

var (
	checkMagic     = []byte{0xE5, 0x43}
	checkedFromKey = []byte("esraft.crc_from")
	castagnoli     = crc32.MakeTable(crc32.Castagnoli)
)

const checkLen = 2 + 4

func newCheckedLog(inner groupLog, logger *slog.Logger) (*checkedLog, error) {
	from, err := inner.GetUint64(checkedFromKey)
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil, fmt.Errorf("raftlog: read the raft log's checksum mark: %w", err)
	}
	return &checkedLog{groupLog: inner, from: from, logger: logger, writes: core.NewHistogram(core.DurationBounds...)}, nil
}

func entryCRC(l *raft.Log, ext []byte) uint32 {
	var hdr [17]byte
	binary.BigEndian.PutUint64(hdr[0:], l.Index)
	binary.BigEndian.PutUint64(hdr[8:], l.Term)
	hdr[16] = byte(l.Type)
	c := crc32.Update(0, castagnoli, hdr[:])
	c = crc32.Update(c, castagnoli, l.Data)
	return crc32.Update(c, castagnoli, ext)
}

// IsMonotonic passes on whether the inner store refuses gaps between
// indexes (raft-wal does; bolt does not). raft asks the store it is given:
// for a monotonic one it empties the log after installing a snapshot,
// since the next entry (snapshot index + 1) may not follow an older tail.
// Hidden behind this wrapper, a follower that installed a snapshot with an
// older range still in its log failed every later append with
// "non-monotonic log entries" and never applied again.
func (c *checkedLog) IsMonotonic() bool {
	m, ok := c.groupLog.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// StoreLog stores one entry with its CRC.
func (c *checkedLog) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores copies of logs, each with its CRC.
func (c *checkedLog) StoreLogs(logs []*raft.Log) error {
	start := time.Now()
	defer func() { c.writes.Observe(int64(time.Since(start))) }()
	if len(logs) == 0 {
		return c.groupLog.StoreLogs(logs)
	}
	if c.from == 0 {
		if err := c.groupLog.SetUint64(checkedFromKey, logs[0].Index); err != nil {
			return err
		}
		c.from = logs[0].Index
	}
	sealed := make([]raft.Log, len(logs))
	ptrs := make([]*raft.Log, len(logs))
	for i, l := range logs {
		sealed[i] = *l
		ext := make([]byte, checkLen+len(l.Extensions))
		copy(ext, checkMagic)
		binary.BigEndian.PutUint32(ext[2:], entryCRC(l, l.Extensions))
		copy(ext[checkLen:], l.Extensions)
		sealed[i].Extensions = ext
		ptrs[i] = &sealed[i]
	}
	return c.groupLog.StoreLogs(ptrs)
}

// GetLog reads the entry at index for raft. A damaged entry is logged and
// answered as raft.ErrLogNotFound: raft then never uses its bytes, and a
// leader that needs it for a follower sends that follower a full copy
// instead (raft compares the error itself, so it cannot be wrapped).
// Applying it would panic the node, as for any entry missing.
func (c *checkedLog) GetLog(index uint64, out *raft.Log) error {
	err := c.getChecked(index, out)
	if errors.Is(err, core.ErrCorrupt) {
		c.logger.Error("raftlog: a raft log entry is damaged; raft treats it as missing", "index", index, "err", err)
		return raft.ErrLogNotFound
	}
	return err
}

// getChecked reads the entry at index and verifies its CRC: a mismatch,
// or an entry past the checksum mark without one, is ErrCorrupt.
func (c *checkedLog) getChecked(index uint64, out *raft.Log) error {
	if err := c.groupLog.GetLog(index, out); err != nil {
		return err
	}
	ext := out.Extensions
	if len(ext) < checkLen || ext[0] != checkMagic[0] || ext[1] != checkMagic[1] {
		if c.from != 0 && index >= c.from {
			return fmt.Errorf("%w: raft log entry %d has no checksum (its bytes were damaged)", core.ErrCorrupt, index)
		}
		return nil // written before this shard had checksums
	}
	want := binary.BigEndian.Uint32(ext[2:])
	orig := ext[checkLen:]
	if len(orig) == 0 {
		orig = nil
	}
	if out.Index != index {
		return fmt.Errorf("%w: raft log entry %d reads back as index %d", core.ErrCorrupt, index, out.Index)
	}
	if got := entryCRC(out, orig); got != want {
		return fmt.Errorf("%w: raft log entry %d: checksum %08x, stored %08x (its bytes were damaged)",
			core.ErrCorrupt, index, got, want)
	}
	out.Extensions = orig
	return nil
}

// verifyLogFrom reads and verifies every entry of logs from index from to
// its last: those raft hands the state machine again when the node starts.
// A damaged one must stop the start; raft itself would panic on it, or,
// without checksums, apply its damaged bytes on this replica only.
func verifyLogFrom(logs raft.LogStore, from uint64) error {
	get := logs.GetLog
	if c, ok := logs.(*checkedLog); ok {
		get = c.getChecked
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raftlog: read the raft log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raftlog: read the raft log: %w", err)
	}
	var l raft.Log
	// The last entry is always read: raft reads it when it starts, and a
	// log cut short can report a last index it no longer holds.
	for i := min(max(from, first), last); i <= last && i != 0; i++ {
		if err := get(i, &l); err != nil {
			if errors.Is(err, core.ErrCorrupt) {
				return fmt.Errorf("%w. Recovery: move this node's data directory aside and start the node empty, "+
					"so that it rejoins and copies the state from its peers", err)
			}
			return fmt.Errorf("%w: raft log entry %d of [%d, %d] cannot be read: %v. Recovery: move this node's "+
				"data directory aside and start the node empty, so that it rejoins and copies the state from its peers",
				core.ErrCorrupt, i, first, last, err)
		}
	}
	return nil
}

var _ raft.MonotonicLogStore = (*checkedLog)(nil)
