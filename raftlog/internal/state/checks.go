package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// Open-time checks (DESIGN.md, "The state files"): the index file must be
// as long as its own meta page says it is (bbolt maps the file, and a page
// past its end would fault: SIGBUS), a panic of bbolt on a damaged page
// becomes an error naming the file, and every segment must hold at least
// the length the index records for it.

// bbolt's meta page (bbolt's internal/common/meta.go): a 16-byte page
// header, then magic, version, page size, flags (4 bytes each), the root
// bucket (16), the freelist page (8), the high water mark: pages in use
// (8), the transaction ID (8) and an FNV-64a checksum of the meta before
// it (8). Both meta pages sit at the start, at page 0 and page 1.
const (
	boltMagic      = 0xED0CDAED
	boltMetaOff    = 16
	boltMetaSumLen = 4*4 + 16 + 8 + 8 + 8
)

// checkIndexFile checks that the bbolt file at path covers the pages its
// newest valid meta page says it has. A file that does not exist or is
// empty is left to bbolt, which creates it.
func checkIndexFile(path string) error {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	corrupt := func(what string, args ...any) error {
		return &CorruptError{File: path, Offset: -1, Partition: -1, What: fmt.Sprintf(what, args...) + "; " + recoveryHint}
	}
	var best struct{ txid, pages uint64 }
	var pageSize uint32
	found := false
	for i := 0; i < 2; i++ {
		hdr := make([]byte, boltMetaOff+boltMetaSumLen+8)
		var at int64
		if i == 1 {
			if pageSize == 0 {
				pageSize = uint32(os.Getpagesize())
			}
			at = int64(pageSize)
		}
		if _, err := fh.ReadAt(hdr, at); err != nil {
			if errors.Is(err, io.EOF) {
				continue
			}
			return err
		}
		m := hdr[boltMetaOff:]
		h := fnv.New64a()
		h.Write(m[:boltMetaSumLen])
		if binary.LittleEndian.Uint32(m) != boltMagic || binary.LittleEndian.Uint64(m[boltMetaSumLen:]) != h.Sum64() {
			continue
		}
		ps := binary.LittleEndian.Uint32(m[8:])
		if i == 0 {
			pageSize = ps
		}
		pages, txid := binary.LittleEndian.Uint64(m[40:]), binary.LittleEndian.Uint64(m[48:])
		if !found || txid > best.txid {
			best.txid, best.pages, found = txid, pages, true
			pageSize = ps
		}
	}
	if !found {
		return corrupt("the index file has no valid meta page")
	}
	if need := int64(best.pages) * int64(pageSize); st.Size() < need {
		return corrupt("the index file is %d bytes, its meta page says %d pages of %d bytes (%d): it was truncated", st.Size(), best.pages, pageSize, need)
	}
	return nil
}

// guard runs fn, turning a panic inside it (bbolt's assertions on a damaged
// page, or a fault reading past its mapping) into a CorruptError naming the
// index file.
func (f *Engine) guard(what string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptError{File: f.path, Offset: -1, Partition: -1,
				What: fmt.Sprintf("%s: the index file is damaged (%v); %s", what, r, recoveryHint)}
			f.markDamaged(err)
		}
	}()
	return fn()
}

// checkSegments checks partition slot's segments against the index in tx
// at Open: each at least as long as the index records (else the node
// refuses to start), bytes past that length (a flush that did not commit)
// truncated, segment files past the last one the index knows removed. It
// returns the partition's last segment, nil if it has none.
func (f *Engine) checkSegments(tx *bolt.Tx, slot int) (*segEntry, error) {
	p := f.partitions[slot]
	pb := tx.Bucket(partitionBucketName(p))
	var first, last *segEntry
	known := map[uint64]bool{}
	err := pb.Bucket(bucketSegs).ForEach(func(k, v []byte) error {
		s, err := openSegEntry(k, v)
		if err != nil {
			return indexError(f.path, fmt.Errorf("partition %d segment table: %w", p, err))
		}
		if last != nil && s.base != last.end() {
			return indexError(f.path, fmt.Errorf("partition %d: segment %d does not follow segment %d (end %d)", p, s.base, last.base, last.end()))
		}
		known[s.base] = true
		last = &s
		if first == nil {
			first = &s
		}
		name := f.segPath(p, s.base)
		fh, err := f.segFile(name, false)
		if err != nil {
			return fmt.Errorf("%w; %s", err, recoveryHint)
		}
		size, err := fh.Size()
		if err != nil {
			return err
		}
		if size < s.length {
			return &CorruptError{File: name, Offset: size, Partition: -1,
				What: fmt.Sprintf("the segment is %d bytes, the index records %d: it lost data; %s", size, s.length, recoveryHint)}
		}
		hdr := make([]byte, segHeaderLen)
		if _, err := fh.ReadAt(hdr, 0); err != nil {
			return err
		}
		if string(hdr) != string(segmentHeader(p, s.base)) {
			return &CorruptError{File: name, Offset: 0, Partition: -1, What: "segment header does not name this partition and base; " + recoveryHint}
		}
		if size > s.length {
			f.logger.Info("raftlog: truncating a segment to the length the index records (a flush did not commit)",
				"file", name, "bytes", size-s.length)
			if err := fh.Truncate(s.length); err != nil {
				return err
			}
			if err := fh.Datasync(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	next, err := getUint64(pb, keyNextOffset)
	if err != nil {
		return nil, indexError(f.path, fmt.Errorf("partition %d next offset: %w", p, err))
	}
	switch {
	case last == nil && next > 0:
		return nil, indexError(f.path, fmt.Errorf("partition %d: next offset %d and no segment; %s", p, next, recoveryHint))
	case last != nil && last.end() != next:
		return nil, indexError(f.path, fmt.Errorf("partition %d: segments end at %d, next offset %d; %s", p, last.end(), next, recoveryHint))
	}
	dir := segmentDir(f.dir, p)
	names, err := f.fs.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base, ok := parseSegmentName(n)
		if !ok || known[base] {
			continue
		}
		if last == nil || base >= last.end() {
			f.logger.Info("raftlog: removing a segment the index does not list (a flush did not commit)", "file", n)
			f.closeSegFile(f.segPath(p, base))
			if err := f.fs.Remove(f.segPath(p, base)); err != nil {
				return nil, err
			}
			continue
		}
		if base < first.base && first.base <= f.ret.parts[slot].Low {
			f.logger.Info("raftlog: removing a scavenged segment (a scavenge did not finish)", "file", n)
			f.closeSegFile(f.segPath(p, base))
			if err := f.fs.Remove(f.segPath(p, base)); err != nil {
				return nil, err
			}
			continue
		}
		f.logger.Warn("raftlog: a segment file the index does not list is left alone", "file", f.segPath(p, base))
	}
	return last, nil
}
