package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Conversion of a format-1 state file (records in each partition's bucket
// "r", values without checksums) into the current format: the records are
// copied into segments in offset order (a tombstone for each offset erasure
// emptied), and every other value into a new index file with checksums.
// The new index is written beside the target (<path>.convert), fsynced and
// renamed into place: that rename is the commit. A crash before it leaves
// the format-1 file as it was and the conversion starts again at the next
// Open (segment files left by it are removed first: a format-1 file lists
// none); after it the old file is gone or is removed. Progress is logged.

// isFormat1 reports whether db is a format-1 state file: one with a meta
// bucket and no format mark.
func isFormat1(db *bolt.DB) (bool, error) {
	var legacy bool
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		legacy = meta != nil && meta.Get(metaFormat) == nil
		return nil
	})
	return legacy, err
}

// convertLegacy converts the format-1 file at legacy (fsm.db), if there is
// one, into the engine's index file and segments, then removes it.
func (f *Engine) convertLegacy(legacy string) error {
	if legacy == "" {
		return nil
	}
	if _, err := os.Stat(legacy); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(f.path); err == nil {
		f.logger.Info("raftlog: removing the format-1 state file, converted before", "file", legacy)
		if err := os.Remove(legacy); err != nil {
			return err
		}
		return SyncDir(filepath.Dir(legacy))
	}
	if err := checkIndexFile(legacy); err != nil {
		return err
	}
	db, err := f.openBolt(legacy)
	if err != nil {
		return err
	}
	err = f.convert(db, f.path)
	db.Close()
	if err != nil {
		return err
	}
	if err := os.Remove(legacy); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(legacy))
}

// convert writes the format-1 state of src as an index file at path and
// segments beside it.
func (f *Engine) convert(src *bolt.DB, path string) error {
	f.logger.Info("raftlog: converting a format-1 state file: records into segments, values with checksums", "file", src.Path(), "to", path)
	for _, p := range f.partitions {
		dir := segmentDir(f.dir, p)
		names, err := f.fs.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, n := range names {
			if _, ok := parseSegmentName(n); ok {
				f.closeSegFile(filepath.Join(dir, n))
				if err := f.fs.Remove(filepath.Join(dir, n)); err != nil {
					return err
				}
			}
		}
	}
	tmp := path + ".convert"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, BoltOptions())
	if err != nil {
		return err
	}
	err = f.guard("convert", func() error { return f.convertInto(src, dst) })
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("raftlog: convert %s: %w", src.Path(), err)
	}
	f.logger.Info("raftlog: converted the state file", "file", path)
	return nil
}

func syncFile(path string) error {
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Sync()
}

// convertInto copies src's state into dst and the segments.
func (f *Engine) convertInto(src, dst *bolt.DB) error {
	return src.View(func(stx *bolt.Tx) error {
		// Whole buckets whose values are copied as they are, with checksums.
		for _, name := range [][]byte{bucketMeta, bucketIDs, bucketIDTime, bucketGroups} {
			if err := copySealed(stx.Bucket(name), dst, func(tx *bolt.Tx) (*bolt.Bucket, error) {
				return tx.CreateBucketIfNotExists(name)
			}); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		f.segs = make([]*segEntry, len(f.partitions))
		for slot, p := range f.partitions {
			if err := f.convertPartition(stx, dst, slot, p); err != nil {
				return fmt.Errorf("partition %d: %w", p, err)
			}
		}
		return dst.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(metaFormat, []byte{formatSegments})
		})
	})
}

// copySealed copies every value of bucket b (nil: none) into the bucket
// that open returns in dst, with checksums, in transactions of bounded size.
func copySealed(b *bolt.Bucket, dst *bolt.DB, open func(*bolt.Tx) (*bolt.Bucket, error)) error {
	var from []byte
	for {
		done := true
		err := dst.Update(func(tx *bolt.Tx) error {
			out, err := open(tx)
			if err != nil || b == nil {
				return err
			}
			c := b.Cursor()
			k, v := c.First()
			if from != nil {
				k, v = c.Seek(from)
			}
			for n := 0; k != nil; k, v = c.Next() {
				if v == nil {
					continue // a nested bucket
				}
				if n++; n > 100000 {
					from, done = append([]byte(nil), k...), false
					return nil
				}
				if err := putValue(out, k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || done {
			return err
		}
	}
}

// convertPartition copies partition p's records into segments and its
// key index, key metadata and next offset into dst.
func (f *Engine) convertPartition(stx *bolt.Tx, dst *bolt.DB, slot int, p core.Partition) error {
	name := partitionBucketName(p)
	pb := stx.Bucket(name)
	if pb == nil {
		return dst.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(name)
			return err
		})
	}
	sub := func(child []byte) func(*bolt.Tx) (*bolt.Bucket, error) {
		return func(tx *bolt.Tx) (*bolt.Bucket, error) {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return nil, err
			}
			return b.CreateBucketIfNotExists(child)
		}
	}
	for _, child := range [][]byte{bucketKeys, bucketKeyMeta} {
		if err := copySealed(pb.Bucket(child), dst, sub(child)); err != nil {
			return err
		}
	}
	if old := pb.Bucket(bucketKeysV1); old != nil {
		if err := dst.Update(func(tx *bolt.Tx) error {
			b, err := sub(bucketKeys)(tx)
			if err != nil {
				return err
			}
			return convertKeyIndexV1(old, b)
		}); err != nil {
			return err
		}
	}
	// The records, in offset order, a tombstone for each erased offset.
	var next uint64
	if v := pb.Get(keyNextOffset); len(v) == 8 {
		next = binary.BigEndian.Uint64(v)
	}
	a := f.newSegAppender(slot)
	pending := 0
	writeOut := func() error {
		var ws []*segWrite
		for _, w := range a.ws {
			if len(w.buf) > 0 {
				ws = append(ws, w)
			}
		}
		if err := f.writeSegments(ws); err != nil {
			return err
		}
		for _, w := range ws {
			w.at, w.buf, w.created = w.entry.length, nil, false
		}
		pending = 0
		return nil
	}
	off, n := uint64(0), 0
	if recs := pb.Bucket(bucketRecs); recs != nil {
		c := recs.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("%w: record key %x", core.ErrCorrupt, k)
			}
			at := binary.BigEndian.Uint64(k)
			for ; off < at; off++ {
				if err := a.add(off, []byte{tombstoneFormat}, 0); err != nil {
					return err
				}
			}
			t, err := storedTime(v)
			if err != nil {
				return fmt.Errorf("record %d: %w", at, err)
			}
			if err := a.add(off, v, t); err != nil {
				return err
			}
			off++
			n++
			if pending += len(v); pending >= 16<<20 {
				if err := writeOut(); err != nil {
					return err
				}
				f.logger.Info("raftlog: converting records", "partition", p, "records", n)
			}
		}
	}
	next = max(next, off)
	for ; off < next; off++ {
		if err := a.add(off, []byte{tombstoneFormat}, 0); err != nil {
			return err
		}
	}
	if err := writeOut(); err != nil {
		return err
	}
	f.logger.Info("raftlog: converted a partition's records into segments", "partition", p, "records", n, "segments", len(a.ws))
	return dst.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		for _, child := range [][]byte{bucketSegs, bucketPositions, bucketKeys, bucketKeyMeta} {
			if _, err := b.CreateBucketIfNotExists(child); err != nil {
				return err
			}
		}
		if err := putSegments(b, a.ws); err != nil {
			return err
		}
		return putUint64(b, keyNextOffset, next)
	})
}

// convertKeyIndexV1 writes the key index of a format-1 file that still has
// one entry per sequence (bucketKeysV1, files written before 2026-11-24)
// into chunks in keys.
func convertKeyIndexV1(old, keys *bolt.Bucket) error {
	alloc := func(n int) []byte { return make([]byte, n) }
	var prefix []byte
	var offsets []uint64
	put := func() error {
		if len(offsets) == 0 {
			return nil
		}
		return putKeyOffsets(keys, prefix, 1, offsets, alloc)
	}
	c := old.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) < 9 || len(v) != 8 {
			return fmt.Errorf("%w: key index entry %x", core.ErrCorrupt, k)
		}
		p, seq := k[:len(k)-8], binary.BigEndian.Uint64(k[len(k)-8:])
		if string(p) != string(prefix) {
			if err := put(); err != nil {
				return err
			}
			prefix, offsets = append([]byte(nil), p...), offsets[:0]
		}
		if seq != uint64(len(offsets))+1 {
			return fmt.Errorf("%w: key index entry %x: sequence %d after %d", core.ErrCorrupt, k, seq, len(offsets))
		}
		offsets = append(offsets, binary.BigEndian.Uint64(v))
	}
	return put()
}
