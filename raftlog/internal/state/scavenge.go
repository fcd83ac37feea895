package state

import (
	"bytes"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Scavenging gives space back in two steps (DESIGN.md, "Space back").
//
// Plan, on any replica: for each partition, walk its sealed segments from
// the oldest and find the first that holds a record a read would return
// (not a tombstone, not below its key's floor, not hidden by retention), or
// that the partition's byte cap keeps; everything below that segment can
// go. The plan is only a proposal: the node proposes a RetTruncatePartition
// entry with that offset, and every replica raises the partition's low
// offset at the same raft index, so what is removed is hidden everywhere at
// once, whatever the rules say later.
//
// Drop, on every replica: once a flush has made the raised low offset
// durable, one index transaction deletes the segment entries and position
// chunks of the sealed segments wholly below the low offset the index
// itself records, then the files are removed and the directory synced. A
// crash after the transaction leaves files the index does not list below
// its first segment: Open removes them (checkSegments). Readers never ask
// for an offset below the low offset, and the drop holds dbMu exclusively,
// so no reader, full-copy stream or scrub pass has a dropped file open.

// Truncation is a planned rise of a partition's low offset.
type Truncation struct {
	Partition core.Partition
	Low       uint64
}

// ScavengePlan returns, per hosted partition whose low offset can rise, the
// offset below which every sealed segment holds nothing readable (or lies
// beyond the partition's byte cap). It reads the segments it weighs at most
// rate bytes per second (0: unbounded), and stops early, with what it has,
// when stop closes.
func (f *Engine) ScavengePlan(stop <-chan struct{}, rate int64) ([]Truncation, error) {
	var out []Truncation
	for slot, p := range f.partitions {
		low, err := f.planPartition(slot, p, stop, rate)
		if err != nil {
			return out, err
		}
		if low > f.PartitionRetention(p).Low {
			out = append(out, Truncation{Partition: p, Low: low})
		}
	}
	return out, nil
}

func (f *Engine) planPartition(slot int, p core.Partition, stop <-chan struct{}, rate int64) (uint64, error) {
	// The rules, key metadata and time as of now, taken under the tables'
	// lock and then released: the walk below may take long, and applies
	// must not wait for it. Key heads come from the file alone, which is
	// at or behind the tables: a count judged on an older head hides
	// fewer records, never more.
	f.mu.RLock()
	ret, meta, now := f.ret, maps.Clone(f.meta[slot]), f.appliedTime.Load()
	f.mu.RUnlock()
	lim := &scrubLimiter{rate: rate, start: time.Now(), stop: stop}
	part := ret.parts[slot]
	low := part.Low
	err := f.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(partitionBucketName(p))
		var rv *retentionView
		if !ret.empty() {
			keys := pb.Bucket(bucketKeys)
			rv = &retentionView{r: ret, slot: slot, now: now, head: func(key string) (uint64, error) { return keyHeadIn(keys, key) }}
		}
		segs, total, err := listSegments(pb.Bucket(bucketSegs))
		if err != nil {
			return err
		}
		for i, s := range segs {
			last := !s.sealed || i == len(segs)-1 // the partition's end lives there
			if !last && part.MaxBytes > 0 && total > int64(part.MaxBytes) || !last && expired(s.newest, now, part.MaxAge) {
				low = max(low, s.end())
				total -= s.length
				continue
			}
			if s.end() <= low {
				total -= s.length
				continue
			}
			// The first record a read would return, if the segment holds
			// one: the low offset rises to it (a scavenge trims the
			// segment's head, Drop), else past the segment.
			first, found := uint64(0), false
			_, err := f.scanSegment(p, pb.Bucket(bucketPositions), &s, max(s.base, low), s.end(), func(off uint64, rec []byte) (bool, error) {
				hidden, err := hiddenRecord(rec, off, meta, rv)
				if err == nil && !hidden {
					first, found = off, true
				}
				return hidden && err == nil, err
			})
			if err != nil {
				return err
			}
			if found {
				low = max(low, first)
				break
			}
			low = max(low, s.end())
			total -= s.length
			if rate > 0 && !lim.wait(int(s.length)) {
				break
			}
		}
		return nil
	})
	return low, err
}

// listSegments returns the segments a partition's table lists, oldest
// first, and their total length.
func listSegments(b *bolt.Bucket) ([]segEntry, int64, error) {
	var segs []segEntry
	var total int64
	err := b.ForEach(func(k, v []byte) error {
		s, err := openSegEntry(k, v)
		if err != nil {
			return err
		}
		segs = append(segs, s)
		total += s.length
		return nil
	})
	return segs, total, err
}

// hiddenRecord reports whether a read would skip the stored record rec at
// offset off: a tombstone, below its key's floor, or hidden by retention
// (rv, nil if no rule hides anything).
func hiddenRecord(rec []byte, off uint64, meta map[string]*keyMeta, rv *retentionView) (bool, error) {
	if isTombstone(rec) {
		return true, nil
	}
	key, seq, err := storedKeySeq(rec)
	if err != nil {
		return false, err
	}
	if km := meta[string(key)]; km != nil && seq < km.floor {
		return true, nil
	}
	if rv == nil {
		return false, nil
	}
	return rv.hides(rec, off)
}

// DropStats says what a drop removed: whole segments, segments rewritten
// without their head, and the bytes given back.
type DropStats struct {
	Segments int
	Trimmed  int
	Bytes    int64
}

// DropSegments removes the sealed segments wholly below each partition's
// low offset as the index records it; it waits for readers that hold the
// files, and makes an index compaction in progress give up.
func (f *Engine) DropSegments() (DropStats, error) {
	st, _, err := f.dropSegments(true)
	return st, err
}

// dropSegments is DropSegments. With wait false (the flusher, which holds
// writeMu) it gives up at once, done false, if a reader holds the files;
// the flusher then tries again after its next flush.
func (f *Engine) dropSegments(wait bool) (st DropStats, done bool, err error) {
	if wait {
		f.lockWrites()
		defer f.unlockWrites()
		f.dbMu.Lock()
	} else if !f.dbMu.TryLock() {
		return DropStats{}, false, nil
	}
	defer f.dbMu.Unlock()
	var names []string
	var written []*segWrite // trimmed segments, removed again if the transaction fails
	dirs := map[string]bool{}
	err = f.guard("scavenge", func() error {
		return f.db.Load().Update(func(tx *bolt.Tx) error {
			rb, err := getValue(tx.Bucket(bucketMeta), metaRetention)
			if err != nil {
				return err
			}
			ret, err := f.decodeRetention(rb)
			if err != nil {
				return err
			}
			for slot, p := range f.partitions {
				low := ret.parts[slot].Low
				if low == 0 {
					continue
				}
				pb := tx.Bucket(partitionBucketName(p))
				segs, pos := pb.Bucket(bucketSegs), pb.Bucket(bucketPositions)
				list, _, err := listSegments(segs)
				if err != nil {
					return err
				}
				var drop []segEntry
				for i, s := range list {
					if !s.sealed || s.end() > low || i == len(list)-1 {
						break // never the last segment
					}
					drop = append(drop, s)
				}
				// The first segment left starts below the low offset: a
				// sealed one (not the last, which the flusher appends to)
				// is rewritten from the low offset on, as a segment whose
				// base is the low offset; the frames are the same bytes
				// on every replica, so the segments stay identical.
				var trimmed *segWrite
				if rest := list[len(drop):]; len(rest) > 1 && rest[0].sealed && rest[0].base < low {
					if trimmed, err = f.trimSegment(pos, slot, &rest[0], low); err != nil {
						return err
					}
					written = append(written, trimmed)
					drop = append(drop, rest[0])
				}
				for _, s := range drop {
					if err := segs.Delete(be64(s.base)); err != nil {
						return err
					}
					if err := deletePrefix(pos, be64(s.base)); err != nil {
						return err
					}
					names = append(names, f.segPath(p, s.base))
					dirs[segmentDir(f.dir, p)] = true
					st.Segments++
					st.Bytes += s.length
				}
				if trimmed != nil {
					if err := putSegments(pb, []*segWrite{trimmed}); err != nil {
						return err
					}
					st.Segments--
					st.Trimmed++
					st.Bytes -= trimmed.entry.length
				}
			}
			return nil
		})
	})
	if err != nil {
		f.undoSegments(written, err)
		return DropStats{}, true, f.indexDamage(err)
	}
	for _, name := range names {
		f.closeSegFile(name)
		if err := f.fs.Remove(name); err != nil {
			return st, true, fmt.Errorf("raftlog: remove scavenged segment (removed again at the next start): %w", err)
		}
	}
	for dir := range dirs {
		if err := f.fs.SyncDir(dir); err != nil {
			return st, true, err
		}
	}
	f.scavenged.Add(int64(st.Segments), st.Bytes)
	if st.Segments > 0 {
		f.logger.Info("raftlog: scavenged segments", "shard", f.shard, "segments", st.Segments, "bytes", st.Bytes)
	}
	return st, true, nil
}

// scavengeCounters count what drops removed since Open.
type scavengeCounters struct{ segments, bytes atomic.Int64 }

func (c *scavengeCounters) Add(segments, bytes int64) {
	c.segments.Add(segments)
	c.bytes.Add(bytes)
}

// Scavenged returns the segments removed (whole or their head) and the
// bytes given back by drops since Open.
func (f *Engine) Scavenged() (segments int, bytes int64) {
	return int(f.scavenged.segments.Load()), f.scavenged.bytes.Load()
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// dropAfterFlush runs on the flusher after table t was written: if t
// raised a low offset (or an earlier drop gave way to readers), the
// segments below it are dropped, unless readers hold the files now.
func (f *Engine) dropAfterFlush(t *memTable) {
	if t.retDirty {
		f.dropPending.Store(true)
	}
	if !f.dropPending.Load() || f.recordingCompaction() != nil {
		return // a compaction copies the file: after the next flush
	}
	_, done, err := f.dropSegments(false)
	if err != nil {
		f.logger.Error("raftlog: dropping scavenged segments failed; retried after the next flush", "shard", f.shard, "err", err)
	} else if done {
		f.dropPending.Store(false)
	}
}

// trimSegment writes the frames of sealed segment s from offset low on as
// a new sealed segment based at low, durably, and returns it as a flush
// would (the caller records it in the index). Tombstones stay tombstones;
// the newest time is s's (an upper bound is all retention needs).
func (f *Engine) trimSegment(pos *bolt.Bucket, slot int, s *segEntry, low uint64) (*segWrite, error) {
	a := &segAppender{f: f, p: f.partitions[slot], slot: slot, hint: int(s.length)}
	_, err := f.scanSegment(a.p, pos, s, low, s.end(), func(off uint64, rec []byte) (bool, error) {
		return true, a.add(off, rec, 0)
	})
	if err != nil {
		return nil, err
	}
	if len(a.ws) != 1 || a.w.entry.base != low || a.w.entry.end() != s.end() {
		return nil, fmt.Errorf("%w: partition %d: trimming segment %d at %d gave %d segments", core.ErrCorrupt, a.p, s.base, low, len(a.ws))
	}
	w := a.w
	w.entry.sealed, w.entry.newest = true, s.newest
	if err := f.writeSegments([]*segWrite{w}); err != nil {
		return nil, f.undoSegments([]*segWrite{w}, err)
	}
	return w, nil
}
