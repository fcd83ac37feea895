package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Segment files (DESIGN.md, "The state files").
//
// A partition's records live in segment files <dir>/p<P>/<base>.seg, each
// holding the records from offset base on, in offset order, one frame per
// offset (offsets are dense: frame i of a segment is offset base+i):
//
//	header  8 bytes magic "ESRLSEG1", 8 bytes partition, 8 bytes base offset (big endian)
//	frame   4 bytes payload length, 4 bytes CRC-32C (Castagnoli) of the payload, payload
//
// The payload is the stored record (format.go), or a tombstone: a first
// byte 0 (a record format is never 0), then zeros, in place of a record
// erased or hidden before it was written. Every file is written only
// past the length the index records for it (or rewritten in place, frame
// for frame at the same length, by erasure), so its bytes up to that
// length are what the index covers; the index also records the CRC-32C of
// those bytes.
const (
	segMagic     = "ESRLSEG1"
	segHeaderLen = 24
	frameHdrLen  = 8
	// segmentBytes is where a segment is sealed: when the next frame would
	// take it past this size, that frame starts a new segment.
	segmentBytes = 64 << 20
	// positionEvery: the index records the file position of every
	// positionEvery-th frame of a segment.
	positionEvery = 16
	// positionsPerChunk is the number of positions in one index entry.
	positionsPerChunk = 256
	tombstoneFormat   = 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// File is what the engine needs of an open segment file. FS and File are
// the layer the engine writes segment files through, so tests can make
// writes fail (a full disk) without one.
type File interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	// Datasync makes the file's data durable (fdatasync).
	Datasync() error
	Size() (int64, error)
	Close() error
}

// FS opens, lists and removes segment files.
type FS interface {
	// OpenFile opens name for reading and writing, creating it (and its
	// directory) if create is set.
	OpenFile(name string, create bool) (File, error)
	Remove(name string) error
	// ReadDir lists the names in a directory, none if it does not exist.
	ReadDir(dir string) ([]string, error)
	SyncDir(dir string) error
}

// OSFS is the operating system's file system.
type OSFS struct{}

var _ FS = OSFS{}

type osFile struct{ *os.File }

func (f osFile) Datasync() error { return datasync(f.File) }

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (OSFS) OpenFile(name string, create bool) (File, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) Remove(name string) error { return os.Remove(name) }

func (OSFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, err
}

func (OSFS) SyncDir(dir string) error { return SyncDir(dir) }

// segmentDir is the directory of partition p's segments under dir.
func segmentDir(dir string, p core.Partition) string {
	return filepath.Join(dir, fmt.Sprintf("p%d", p))
}

func segmentName(base uint64) string { return fmt.Sprintf("%020d.seg", base) }

// parseSegmentName returns the base offset a segment file name names.
func parseSegmentName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(s) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

func segmentHeader(p core.Partition, base uint64) []byte {
	b := append(make([]byte, 0, segHeaderLen), segMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(p))
	return binary.BigEndian.AppendUint64(b, base)
}

// appendFrame appends payload's frame to b.
func appendFrame(b, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32c(payload))
	return append(b, payload...)
}

// isTombstone reports whether a frame's payload stands for an erased record.
func isTombstone(payload []byte) bool { return len(payload) > 0 && payload[0] == tombstoneFormat }

// CorruptError is a damaged byte range found in a state file: the
// segment file and the position in it, or the index and the value's key.
// It wraps core.ErrCorrupt.
type CorruptError struct {
	File   string
	Offset int64  // position in File (-1: not known)
	Record uint64 // the record offset concerned, if Partition >= 0
	// Partition is the partition concerned, -1 for the index.
	Partition core.Partition
	What      string
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("raftlog: corrupt data: %s", e.File)
	if e.Offset >= 0 {
		s += fmt.Sprintf(" at byte %d", e.Offset)
	}
	if e.Partition >= 0 {
		s += fmt.Sprintf(" (partition %d, record offset %d)", e.Partition, e.Record)
	}
	return s + ": " + e.What
}

func (e *CorruptError) Unwrap() error { return core.ErrCorrupt }

// segEntry is a segment's entry in the index (bucket bucketSegs of its
// partition, keyed by its big-endian base offset).
//
//	8 bytes  length covered by the index, header included
//	8 bytes  frames (records) it holds: offsets base .. base+count-1
//	4 bytes  CRC-32C of the file's bytes up to length
//	8 bytes  the newest record time in it, Unix nanoseconds
//	byte     flags: 1 sealed
type segEntry struct {
	base   uint64
	length int64
	count  uint64
	crc    uint32
	newest int64
	sealed bool
}

const segEntryLen = 29

func (s *segEntry) end() uint64 { return s.base + s.count }

func encodeSegEntry(b []byte, s *segEntry) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(s.length))
	b = binary.BigEndian.AppendUint64(b, s.count)
	b = binary.BigEndian.AppendUint32(b, s.crc)
	b = binary.BigEndian.AppendUint64(b, uint64(s.newest))
	var flags byte
	if s.sealed {
		flags = 1
	}
	return append(b, flags)
}

func decodeSegEntry(base uint64, b []byte) (segEntry, error) {
	if len(b) != segEntryLen || b[28] > 1 {
		return segEntry{}, fmt.Errorf("%w: segment entry of %d bytes", core.ErrCorrupt, len(b))
	}
	s := segEntry{
		base: base, length: int64(binary.BigEndian.Uint64(b)), count: binary.BigEndian.Uint64(b[8:]),
		crc: binary.BigEndian.Uint32(b[16:]), newest: int64(binary.BigEndian.Uint64(b[20:])), sealed: b[28] == 1,
	}
	if s.length < segHeaderLen || s.count > uint64(s.length) {
		return segEntry{}, fmt.Errorf("%w: segment entry length %d, %d records", core.ErrCorrupt, s.length, s.count)
	}
	return s, nil
}

// positionKey is the index key of the chunk of positions of frames
// chunk*positionsPerChunk*positionEvery.. of segment base.
func positionKey(b []byte, base uint64, chunk uint32) []byte {
	b = binary.BigEndian.AppendUint64(b[:0], base)
	return binary.BigEndian.AppendUint32(b, chunk)
}

// storedTime returns the time of a stored record (format.go) without
// decoding the rest.
func storedTime(b []byte) (int64, error) {
	d := wire.Decoder{B: b}
	if v := d.Byte(); d.Err == nil && v != recordFormatV1 {
		return 0, fmt.Errorf("%w: record format %d", core.ErrCorrupt, v)
	}
	d.Raw(d.Uvarint()) // key
	d.Uvarint()        // key sequence
	d.Raw(16)          // ID
	t := d.Varint()
	return t, d.Err
}
