package raftlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
)

// raft-wal's segment format (raft-wal v0.4.2, segment/format.go), as far
// as checkWALTail reads it: a 32-byte file header, then frames aligned to
// 8 bytes. A frame header is a type byte, three zero bytes and a
// little-endian uint32: the payload's length for an entry or index frame,
// for a commit frame the CRC-32C of every byte written since the previous
// commit frame (from the start of the file for the first). Each append
// writes its entries and one commit frame, then syncs.
const (
	walFileHeaderLen  = 32
	walFrameHeaderLen = 8
	walFrameEntry     = 1
	walFrameIndex     = 2
	walFrameCommit    = 3
	walSegmentSuffix  = ".wal"

	// walTailScanBudget bounds the frames checkWALTail reads past the cut
	// (a torn write's leftovers make short walks; a long one finds its
	// proof at once).
	walTailScanBudget = 4 << 20
)

var walCRCTable = crc32.MakeTable(crc32.Castagnoli)

// checkWALTail reads raft-wal's last segment in wdir as raft-wal's
// recovery will, before it opens the log. That recovery stops at the first
// frame it cannot read and drops what follows, taking damage for a torn
// write: the tail of the append that was under way at a crash, never
// acknowledged. But a torn write leaves at most that one append's frames,
// one commit frame, past the cut. Two commit frames past it, the second's
// checksum matching the bytes since the first, are appends that were
// synced (and acknowledged) after the damaged one: the cut would lose
// them, and raft would run on the shorter log (RELIABILITY.md, bug 13).
// That is ErrCorrupt. Damage in the last or next-to-last append before the
// end is not told apart from a torn write here.
func checkWALTail(wdir string) error {
	path, err := lastWALSegment(wdir)
	if err != nil || path == "" {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("raftlog: read the raft log's last segment: %w", err)
	}
	cut, stop := walRecoveredEnd(b)
	if at, ok := walCommittedPast(b, cut); ok {
		return fmt.Errorf("%w: the raft log's last segment %s is damaged at byte %d: raft-wal would drop everything "+
			"from byte %d as a torn write, but appends synced after the damage follow it (a commit frame at byte %d). "+
			"Recovery: move this node's data directory aside and start the node empty, so that it rejoins and "+
			"copies the state from its peers",
			ErrCorrupt, filepath.Base(path), stop, cut, at)
	}
	return nil
}

// lastWALSegment returns the path of the segment file with the highest ID
// in wdir (raft-wal names them baseIndex-ID.wal, the ID in hex), or "".
func lastWALSegment(wdir string) (string, error) {
	entries, err := os.ReadDir(wdir)
	if err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", err
	}
	var last string
	var lastID uint64
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, walSegmentSuffix) {
			continue
		}
		var base, id uint64
		if n, err := fmt.Sscanf(name, "%020d-%016x"+walSegmentSuffix, &base, &id); err != nil || n != 2 {
			continue
		}
		if last == "" || id > lastID {
			last, lastID = filepath.Join(wdir, name), id
		}
	}
	return last, nil
}

// walFrame reads the frame header at off: its type, its length or CRC,
// and the offset of the next frame. ok is false where raft-wal's reading
// stops: past the end, zeros, an unknown type, non-zero reserved bytes or
// a length past the end.
func walFrame(b []byte, off int) (typ byte, val uint32, next int, ok bool) {
	if off < 0 || off+walFrameHeaderLen > len(b) {
		return 0, 0, 0, false
	}
	h := b[off : off+walFrameHeaderLen]
	typ, val = h[0], binary.LittleEndian.Uint32(h[4:8])
	if typ < walFrameEntry || typ > walFrameCommit || h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return 0, 0, 0, false
	}
	next = off + walFrameHeaderLen
	if typ != walFrameCommit {
		next += (int(val) + walFrameHeaderLen - 1) &^ (walFrameHeaderLen - 1)
		if next > len(b) {
			return 0, 0, 0, false
		}
	}
	return typ, val, next, true
}

// walRecoveredEnd returns where the log raft-wal recovers from segment
// bytes b ends, as its recovery decides: reading frames up to the first it
// cannot read, it keeps everything up to the last commit frame; if that
// frame is the last one read, its checksum must match, or the append it
// closes is taken for torn and dropped as well. stop is where the reading
// stopped.
func walRecoveredEnd(b []byte) (end, stop int) {
	var commits []int // offsets of the commit frames read
	lastFrame := -1
	for stop = walFileHeaderLen; ; {
		typ, _, next, ok := walFrame(b, stop)
		if !ok {
			break
		}
		if typ == walFrameCommit {
			commits = append(commits, stop)
		}
		lastFrame, stop = stop, next
	}
	n := len(commits)
	if n == 0 {
		return walFileHeaderLen, stop
	}
	final := commits[n-1]
	if final == lastFrame {
		start := 0 // the first commit's checksum covers the file header
		if n > 1 {
			start = commits[n-2] + walFrameHeaderLen
		}
		if crc32.Checksum(b[start:final], walCRCTable) != binary.LittleEndian.Uint32(b[final+4:]) {
			if n == 1 {
				return walFileHeaderLen, stop
			}
			return commits[n-2] + walFrameHeaderLen, stop
		}
	}
	return final + walFrameHeaderLen, stop
}

// walCommittedPast reports whether, at or after cut, a chain of frames
// (each header's length leading to the next) holds two commit frames, the
// second's checksum matching the bytes between them, and where the second
// is. Chains are tried from every 8-byte boundary, since damage hides where
// the frames after it begin.
func walCommittedPast(b []byte, cut int) (int, bool) {
	budget := walTailScanBudget
	for start := cut; start+walFrameHeaderLen <= len(b) && budget > 0; start += walFrameHeaderLen {
		prevCommit := -1
		for off := start; budget > 0; budget-- {
			typ, val, next, ok := walFrame(b, off)
			if !ok {
				break
			}
			if typ == walFrameCommit {
				if prevCommit >= 0 && crc32.Checksum(b[prevCommit+walFrameHeaderLen:off], walCRCTable) == val {
					return off, true
				}
				prevCommit = off
			}
			off = next
		}
	}
	return 0, false
}
