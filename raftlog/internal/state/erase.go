package state

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Erasure of records below a key's floor (a delete or truncation).
//
// Records the flush writes after their key's floor passed them become
// tombstones at once (planSegments). Records already in a segment are
// overwritten in place, frame for frame: the payload becomes a tombstone of
// the same length (byte 0, then zeros) with its checksum, so every
// position and length in the index stays true. The flush that records a
// key's new floor keeps the key's erased mark where it was; erase then
// overwrites the frames, syncs them, and records in one transaction the
// erased mark and the new CRCs of the segments it changed. A crash in
// between leaves the erased mark behind the floor, and Open finishes the
// erasure (finishErasures) before anything reads a CRC. Full-copy streams
// and the scrub hold segMu shared, erase exclusively, so neither sees a
// segment whose CRC is being changed.

type segKey struct {
	slot int
	base uint64
}

// erase overwrites the records of each pending erasure with tombstones and
// records it in the index.
func (f *Engine) erase(list []pendingErasure) error {
	f.segMu.Lock()
	defer f.segMu.Unlock()
	touched := map[segKey]segEntry{}
	err := f.db.Load().View(func(tx *bolt.Tx) error {
		for _, e := range list {
			p := f.partitions[e.slot]
			pb := tx.Bucket(partitionBucketName(p))
			var offs []uint64
			err := eachKeyOffset(pb.Bucket(bucketKeys), e.key, e.from, func(seq, off uint64) (bool, error) {
				if seq >= e.floor {
					return false, nil
				}
				offs = append(offs, off)
				return true, nil
			})
			if err != nil {
				return err
			}
			segs, pos := pb.Bucket(bucketSegs), pb.Bucket(bucketPositions)
			for _, off := range offs {
				s, ok, err := findSegment(segs, off)
				if err != nil {
					return err
				}
				if !ok {
					continue // erased before it reached a segment
				}
				if err := f.tombstoneFrame(e.slot, pos, &s, off); err != nil {
					return err
				}
				touched[segKey{e.slot, s.base}] = s
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, s := range touched {
		fh, err := f.segFile(f.segPath(f.partitions[k.slot], s.base), false)
		if err != nil {
			return err
		}
		if err := fh.Datasync(); err != nil {
			return err
		}
		if s.crc, err = fileCRC(fh, s.length); err != nil {
			return err
		}
		touched[k] = s
	}
	// What the transaction writes depends only on the file and on
	// touched and list: a compaction that copies the file meanwhile
	// writes it again to its copy.
	write := func(tx *bolt.Tx) error {
		var errs []error
		for k, s := range touched {
			pb := tx.Bucket(partitionBucketName(f.partitions[k.slot]))
			errs = append(errs, putValue(pb.Bucket(bucketSegs), be64(s.base), encodeSegEntry(nil, &s)))
		}
		for _, e := range list {
			metaB := tx.Bucket(partitionBucketName(f.partitions[e.slot])).Bucket(bucketKeyMeta)
			km, ok, err := getKeyMeta(metaB, e.key)
			if err != nil || !ok {
				errs = append(errs, err)
				continue
			}
			km.erased = max(km.erased, e.floor)
			errs = append(errs, putValue(metaB, []byte(e.key), encodeKeyMeta(nil, km)))
		}
		return errors.Join(errs...)
	}
	if err := f.db.Load().Update(write); err != nil {
		return err
	}
	if r := f.recordingCompaction(); r != nil {
		r.record(len(list)*64, write)
	}
	for k, s := range touched {
		if cur := f.segs[k.slot]; cur != nil && cur.base == s.base {
			cur.crc = s.crc
		}
	}
	return nil
}

// tombstoneFrame overwrites the frame of offset off in segment s of
// partition slot with a tombstone of the same length.
func (f *Engine) tombstoneFrame(slot int, pos *bolt.Bucket, s *segEntry, off uint64) error {
	p := f.partitions[slot]
	at, cur, err := framePosition(pos, s, off)
	if err != nil {
		return err
	}
	name := f.segPath(p, s.base)
	fh, err := f.segFile(name, false)
	if err != nil {
		return err
	}
	var hdr [frameHdrLen + 1]byte
	for {
		if _, err := fh.ReadAt(hdr[:], at); err != nil {
			return &CorruptError{File: name, Offset: at, Partition: p, Record: cur, What: fmt.Sprintf("read frame: %v", err)}
		}
		n := int64(binary.BigEndian.Uint32(hdr[:]))
		if n < 1 || at+frameHdrLen+n > s.length {
			return &CorruptError{File: name, Offset: at, Partition: p, Record: cur, What: fmt.Sprintf("frame length %d runs past the segment's recorded length %d", n, s.length)}
		}
		if cur == off {
			if hdr[frameHdrLen] == tombstoneFormat {
				return nil // erased before (a repeated erasure)
			}
			frame := appendFrame(nil, make([]byte, n))
			_, err := fh.WriteAt(frame, at)
			return err
		}
		at += frameHdrLen + n
		cur++
	}
}

// finishErasures completes erasures a crash interrupted: keys whose floor
// the index holds above their erased mark. It runs at Open, before the
// scrub or a full copy reads a segment's CRC.
func (f *Engine) finishErasures() error {
	var list []pendingErasure
	for slot, metas := range f.meta {
		for k, m := range metas {
			if m.floor > m.erased {
				list = append(list, pendingErasure{slot: slot, key: k, from: m.erased, floor: m.floor})
			}
		}
	}
	if len(list) == 0 {
		return nil
	}
	if err := f.erase(list); err != nil {
		return err
	}
	for _, e := range list {
		old := f.meta[e.slot][e.key]
		f.meta[e.slot][e.key] = &keyMeta{floor: old.floor, erased: e.floor, deleted: old.deleted}
	}
	return nil
}
