package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The scrub re-reads, in the background and at a bounded rate, every
// segment against the CRC-32C its index entry records (the active one up to
// the length its last flush recorded), and every
// value of the index against its own checksum, so damage to data nobody
// reads is found too. A finding marks the engine damaged and is logged
// (markDamaged); repair is the documented wipe and rejoin.

// Scrub defaults: the rate bounds the bytes read per second, segments and
// index values together; a pass starts scrubInterval after the previous
// one ended.
const (
	defaultScrubRate     = 16 << 20
	defaultScrubInterval = time.Hour
	scrubChunk           = 256 << 10
	scrubValuesPerTx     = 4096
)

// scrubLimiter paces reads to a rate in bytes per second.
type scrubLimiter struct {
	rate  int64
	start time.Time
	done  int64
	stop  <-chan struct{}
}

// wait counts n bytes read and waits until reading them fits the rate; it
// returns false if stop closed meanwhile.
func (l *scrubLimiter) wait(n int) bool {
	l.done += int64(n)
	due := l.start.Add(time.Duration(float64(l.done) / float64(l.rate) * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		select {
		case <-l.stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.stop:
		return false
	}
}

// stopScrub stops the scrub goroutine, if it runs, and waits for it.
func (f *Engine) stopScrub() {
	if f.scrubDone == nil {
		return
	}
	f.scrubStopOnce.Do(func() { close(f.scrubStop) })
	<-f.scrubDone
}

// runScrub is the scrub goroutine: a pass, then scrubInterval, until Close.
func (f *Engine) runScrub() {
	defer close(f.scrubDone)
	for {
		if err := f.scrubOnce(f.scrubStop); err != nil {
			f.markDamaged(err)
		}
		t := time.NewTimer(f.scrubInterval)
		select {
		case <-t.C:
		case <-f.scrubStop:
			t.Stop()
			return
		}
	}
}

// scrubOnce makes one pass over the segments and the index values
// at the engine's scrub rate; it returns the first damage found (nil if
// none, or if stop closed first).
func (f *Engine) scrubOnce(stop <-chan struct{}) error {
	lim := &scrubLimiter{rate: f.scrubRate, start: time.Now(), stop: stop}
	for slot := range f.partitions {
		var bases []uint64
		err := f.view(func(tx *bolt.Tx) error {
			return tx.Bucket(partitionBucketName(f.partitions[slot])).Bucket(bucketSegs).ForEach(func(k, _ []byte) error {
				if len(k) == 8 {
					bases = append(bases, binary.BigEndian.Uint64(k))
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		for _, base := range bases {
			more, err := f.scrubSegment(slot, base, lim)
			if !more || err != nil {
				return err
			}
		}
	}
	_, err := f.scrubIndex(lim)
	return err
}

// scrubSegment checks segment base of partition slot against its recorded
// CRC: a sealed one whole, the active one up to the length its last flush
// recorded (the flusher only writes past it, and a failed flush truncates
// back to it). Segments change otherwise only by erasure, which segMu
// excludes, and by Restore, which dbMu excludes: both are held shared for
// the segment's read.
func (f *Engine) scrubSegment(slot int, base uint64, lim *scrubLimiter) (bool, error) {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	f.segMu.RLock()
	defer f.segMu.RUnlock()
	p := f.partitions[slot]
	var s segEntry
	var ok bool
	err := f.guard("scrub", func() error {
		return f.viewLocked(func(tx *bolt.Tx) error {
			var err error
			s, ok, err = findSegment(tx.Bucket(partitionBucketName(p)).Bucket(bucketSegs), base)
			return err
		})
	})
	if err != nil {
		return false, f.indexDamage(err)
	}
	if !ok || s.base != base {
		return true, nil // gone
	}
	name := f.segPath(p, base)
	fh, err := f.segFile(name, false)
	if err != nil {
		return false, err
	}
	buf := make([]byte, scrubChunk)
	var crc uint32
	for at := int64(0); at < s.length; {
		n := int(min(int64(len(buf)), s.length-at))
		if _, err := fh.ReadAt(buf[:n], at); err != nil && err != io.EOF {
			return false, &CorruptError{File: name, Offset: at, Partition: p, Record: base, What: fmt.Sprintf("scrub: read: %v", err)}
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		at += int64(n)
		if !lim.wait(n) {
			return false, nil
		}
	}
	if crc != s.crc {
		return false, &CorruptError{File: name, Offset: -1, Partition: p, Record: base,
			What: fmt.Sprintf("scrub: the CRC-32C of the segment's first %d bytes is %08x, the index records %08x", s.length, crc, s.crc)}
	}
	return true, nil
}

// indexBuckets are the paths of the index's buckets whose values carry
// checksums (meta's format mark is the one bare value, skipped).
func (f *Engine) indexBuckets() [][][]byte {
	paths := [][][]byte{{bucketMeta}, {bucketIDs}, {bucketIDTime}, {bucketGroups}}
	for _, p := range f.partitions {
		pb := partitionBucketName(p)
		paths = append(paths, [][]byte{pb})
		for _, child := range [][]byte{bucketKeys, bucketKeyMeta, bucketSegs, bucketPositions} {
			paths = append(paths, [][]byte{pb, child})
		}
	}
	return paths
}

// scrubIndex verifies every index value's checksum, scrubValuesPerTx
// values per read transaction (a long one would hold up the flusher when
// bbolt must remap).
func (f *Engine) scrubIndex(lim *scrubLimiter) (bool, error) {
	for _, path := range f.indexBuckets() {
		var from []byte
		for first := true; first || from != nil; first = false {
			var read int
			err := f.view(func(tx *bolt.Tx) error {
				b := tx.Bucket(path[0])
				for _, name := range path[1:] {
					if b == nil {
						break
					}
					b = b.Bucket(name)
				}
				if b == nil {
					from = nil
					return nil
				}
				c := b.Cursor()
				k, v := c.First()
				if from != nil {
					k, v = c.Seek(from)
				}
				from = nil
				for n := 0; k != nil; k, v = c.Next() {
					if n++; n > scrubValuesPerTx {
						from = bytes.Clone(k)
						return nil
					}
					if v == nil || (len(path) == 1 && bytes.Equal(path[0], bucketMeta) && bytes.Equal(k, metaFormat)) {
						continue // a nested bucket; the format mark
					}
					read += len(k) + len(v)
					if _, err := openValue(k, v); err != nil {
						return fmt.Errorf("scrub: bucket %q: %w", bytes.Join(path, []byte("/")), err)
					}
				}
				return nil
			})
			if err != nil {
				return false, err
			}
			if !lim.wait(read) {
				return false, nil
			}
		}
	}
	return true, nil
}
