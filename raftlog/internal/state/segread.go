package state

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// recoveryHint is how an operator repairs a node whose state is damaged.
const recoveryHint = "to recover, stop this node, remove its data directory and start it with the same command: " +
	"it rejoins the cluster and receives a full copy from a healthy peer (raftlog/DESIGN.md, \"Bootstrap, identity and rejoin\")"

func (f *Engine) segPath(p core.Partition, base uint64) string {
	return filepath.Join(segmentDir(f.dir, p), segmentName(base))
}

// segFile returns the open handle of segment file name, opening it (and
// creating it if create is set) on first use. Handles are shared: reads
// use ReadAt, the flusher WriteAt past every length a reader may read.
func (f *Engine) segFile(name string, create bool) (File, error) {
	f.filesMu.Lock()
	defer f.filesMu.Unlock()
	if fh := f.files[name]; fh != nil {
		return fh, nil
	}
	fh, err := f.fs.OpenFile(name, create)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &CorruptError{File: name, Offset: -1, Partition: -1, What: "the index lists this segment file and it is missing"}
		}
		return nil, err
	}
	f.files[name] = fh
	return fh, nil
}

func (f *Engine) closeSegFile(name string) {
	f.filesMu.Lock()
	defer f.filesMu.Unlock()
	if fh := f.files[name]; fh != nil {
		fh.Close()
		delete(f.files, name)
	}
}

func (f *Engine) closeSegFiles() {
	f.filesMu.Lock()
	defer f.filesMu.Unlock()
	for name, fh := range f.files {
		fh.Close()
		delete(f.files, name)
	}
}

// markDamaged records that the state holds damaged data (the first error
// found is kept) and logs it.
func (f *Engine) markDamaged(err error) {
	if f.damage.CompareAndSwap(nil, &err) {
		f.logger.Error("raftlog: the state is damaged; this node serves no record of the damaged range. "+recoveryHint,
			"shard", f.shard, "err", err)
		if f.onDamage != nil {
			go f.onDamage(err)
		}
	}
}

// Damage returns the first damage found in the state files (an error
// wrapping core.ErrCorrupt), nil while none was.
func (f *Engine) Damage() error {
	if p := f.damage.Load(); p != nil {
		return *p
	}
	return nil
}

// noteDamage marks the engine damaged if err is a corruption, and returns err.
func (f *Engine) noteDamage(err error) error {
	if errors.Is(err, core.ErrCorrupt) {
		f.markDamaged(err)
	}
	return err
}

// findSegment returns the entry of the segment holding offset off in the
// index bucket segs, false if none does.
func findSegment(segs *bolt.Bucket, off uint64) (segEntry, bool, error) {
	c := segs.Cursor()
	k, v := c.Seek(be64(off))
	if k == nil {
		k, v = c.Last()
	} else if binary.BigEndian.Uint64(k) > off {
		k, v = c.Prev()
	}
	if k == nil {
		return segEntry{}, false, nil
	}
	s, err := openSegEntry(k, v)
	if err != nil || off >= s.end() {
		return segEntry{}, false, err
	}
	return s, true, nil
}

func openSegEntry(k, v []byte) (segEntry, error) {
	if len(k) != 8 {
		return segEntry{}, fmt.Errorf("%w: segment key %x", core.ErrCorrupt, k)
	}
	p, err := openValue(k, v)
	if err != nil {
		return segEntry{}, err
	}
	return decodeSegEntry(binary.BigEndian.Uint64(k), p)
}

// framePosition returns the file position of a frame at or below offset
// off (at most positionEvery-1 frames before it) and that frame's offset.
func framePosition(pos *bolt.Bucket, s *segEntry, off uint64) (int64, uint64, error) {
	return listedPosition(pos, s, (off-s.base)/positionEvery)
}

// readEnd returns the file position where the frames of segment s up to
// offset end (excluded) end at the latest: the next listed position at or
// after it, or the segment's length.
func readEnd(pos *bolt.Bucket, s *segEntry, end uint64) (int64, error) {
	j := (end - s.base + positionEvery - 1) / positionEvery
	if s.base+j*positionEvery >= s.end() {
		return s.length, nil
	}
	at, _, err := listedPosition(pos, s, j)
	return at, err
}

// listedPosition returns the position of frame j*positionEvery of segment
// s, and that frame's offset.
func listedPosition(pos *bolt.Bucket, s *segEntry, j uint64) (int64, uint64, error) {
	off := s.base + j*positionEvery
	k := positionKey(nil, s.base, uint32(j/positionsPerChunk))
	v, err := getValue(pos, k)
	if err != nil {
		return 0, 0, err
	}
	i := int(j%positionsPerChunk) * 4
	if len(v) < i+4 {
		return 0, 0, fmt.Errorf("%w: segment %d has no position for offset %d", core.ErrCorrupt, s.base, off)
	}
	at := int64(binary.BigEndian.Uint32(v[i:]))
	if at < segHeaderLen || at >= s.length {
		return 0, 0, fmt.Errorf("%w: segment %d: position %d of offset %d outside it", core.ErrCorrupt, s.base, at, off)
	}
	return at, off, nil
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// scanSegments calls fn with the verified payload of each frame of
// partition p from offset from to offset to (excluded), as the index in tx
// records them, until fn returns false or an error. The payload is valid
// only during the call. A frame that fails its checksum, or that the
// index's lengths and positions do not lead to, is a CorruptError naming
// the file and position: never a wrong value.
func (f *Engine) scanSegments(tx *bolt.Tx, p core.Partition, from, to uint64, fn func(off uint64, payload []byte) (bool, error)) error {
	pb := tx.Bucket(partitionBucketName(p))
	segs, pos := pb.Bucket(bucketSegs), pb.Bucket(bucketPositions)
	for from < to {
		s, ok, err := findSegment(segs, from)
		if err != nil {
			return indexError(f.path, fmt.Errorf("partition %d segment table: %w", p, err))
		}
		if !ok {
			return nil
		}
		if more, err := f.scanSegment(p, pos, &s, from, min(to, s.end()), fn); !more || err != nil {
			return err
		}
		from = s.end()
	}
	return nil
}

func (f *Engine) scanSegment(p core.Partition, pos *bolt.Bucket, s *segEntry, from, end uint64, fn func(uint64, []byte) (bool, error)) (bool, error) {
	at, off, err := framePosition(pos, s, from)
	var stop int64
	if err == nil {
		stop, err = readEnd(pos, s, end) // a short read fetches no more than it needs
	}
	if err != nil {
		return false, indexError(f.path, fmt.Errorf("partition %d: %w", p, err))
	}
	name := f.segPath(p, s.base)
	fh, err := f.segFile(name, false)
	if err != nil {
		return false, err
	}
	r := readerPool.Get().(*bufio.Reader)
	defer readerPool.Put(r)
	r.Reset(io.NewSectionReader(fh, at, stop-at))
	corrupt := func(what string, args ...any) error {
		return &CorruptError{File: name, Offset: at, Partition: p, Record: off, What: fmt.Sprintf(what, args...)}
	}
	var hdr [frameHdrLen]byte
	var payload []byte
	for ; off < end; off++ {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return false, corrupt("the frames end before the index says (at byte %d; the segment's recorded length is %d)", stop, s.length)
			}
			return false, err
		}
		n := int64(binary.BigEndian.Uint32(hdr[:]))
		if n > stop-at-frameHdrLen {
			return false, corrupt("frame length %d runs past position %d, where the index says a frame starts (the segment's recorded length is %d)", n, stop, s.length)
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			return false, corrupt("frame cut short: %v", err)
		}
		if crc32c(payload) != binary.BigEndian.Uint32(hdr[4:]) {
			return false, corrupt("frame checksum mismatch")
		}
		if off >= from {
			if more, err := fn(off, payload); !more || err != nil {
				return false, err
			}
		}
		at += frameHdrLen + n
	}
	return true, nil
}

// fileCRC is the CRC-32C of the first length bytes of a segment file.
func fileCRC(fh File, length int64) (uint32, error) {
	buf := make([]byte, 1<<20)
	var crc uint32
	for at := int64(0); at < length; {
		n := int(min(int64(len(buf)), length-at))
		if _, err := fh.ReadAt(buf[:n], at); err != nil {
			return 0, err
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		at += int64(n)
	}
	return crc, nil
}

// FlushError returns the error of the last flush attempt while flushes
// fail, nil once one succeeds.
func (f *Engine) FlushError() error {
	if p := f.flushErr.Load(); p != nil {
		return *p
	}
	return nil
}
