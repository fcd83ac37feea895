package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// The key index in the state file maps a key's sequences to offsets in
// chunks of keyChunk: entry (key, c) holds the offsets of sequences
// c*keyChunk+1 .. c*keyChunk+keyChunk, big-endian, 8 bytes each, as many
// as the key has so far (a key's sequences are dense from 1). A flush
// thus puts one entry per key and chunk it touches instead of one per
// record, and the index is several times smaller: a B-tree page a flush
// rewrites carries more of the key's history. The layout depends only on
// the sequences, never on when tables were flushed, so replicas' files
// stay identical.
const keyChunk = 16

// keyChunkKey is the index entry key of (prefix, the chunk of seq), where
// prefix is appendString(nil, key). seq must be at least 1.
func keyChunkKey(b, prefix []byte, seq uint64) []byte {
	b = append(b[:0], prefix...)
	return binary.BigEndian.AppendUint64(b, (seq-1)/keyChunk)
}

// keyHeadIn returns the current sequence of key in the state file: the
// last sequence its index holds, 0 if it has none.
func keyHeadIn(keys *bolt.Bucket, key string) uint64 {
	prefix := wire.AppendString(nil, key)
	c := keys.Cursor()
	k, v := c.Seek(binary.BigEndian.AppendUint64(prefix, ^uint64(0))) // prefix[:len] unchanged
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(prefix):])*keyChunk + uint64(len(v)/8)
}

// eachKeyOffset calls fn with the sequence and offset of each record of
// key the state file's index holds from sequence from on, in order, until
// fn returns false or an error.
func eachKeyOffset(keys *bolt.Bucket, key string, from uint64, fn func(seq, off uint64) (bool, error)) error {
	from = max(from, 1)
	prefix := wire.AppendString(nil, key)
	c := keys.Cursor()
	for k, v := c.Seek(keyChunkKey(nil, prefix, from)); k != nil && len(k) == len(prefix)+8 && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		base := binary.BigEndian.Uint64(k[len(prefix):])*keyChunk + 1
		for i := 0; i+8 <= len(v); i += 8 {
			seq := base + uint64(i/8)
			if seq < from {
				continue
			}
			if more, err := fn(seq, binary.BigEndian.Uint64(v[i:])); !more || err != nil {
				return err
			}
		}
	}
	return nil
}

// putKeyOffsets adds to the index in keys the offsets of key sequences
// first, first+1, ... of the key whose appendString encoding is prefix:
// it completes the chunk the index already started, then writes new ones.
// alloc provides memory that lives until the transaction commits.
func putKeyOffsets(keys *bolt.Bucket, prefix []byte, first uint64, offsets []uint64, alloc func(int) []byte) error {
	seq := first
	for j := 0; j < len(offsets); {
		pos := int((seq - 1) % keyChunk)
		n := min(keyChunk-pos, len(offsets)-j)
		ck := keyChunkKey(alloc(len(prefix)+8), prefix, seq)
		var old []byte
		if pos > 0 {
			old = keys.Get(ck)
		}
		if len(old) != 8*pos {
			return fmt.Errorf("%w: key index chunk %x holds %d offsets, sequence %d follows %d", core.ErrCorrupt, ck, len(old)/8, seq, pos)
		}
		v := alloc(len(old) + 8*n)[:0]
		v = append(v, old...)
		for _, off := range offsets[j : j+n] {
			v = binary.BigEndian.AppendUint64(v, off)
		}
		if err := keys.Put(ck, v); err != nil {
			return err
		}
		seq += uint64(n)
		j += n
	}
	return nil
}

// migrateKeyIndex rewrites the partition bucket pb's key index from one
// entry per sequence (bucketKeysV1, files written before 2026-11-24) into
// chunks, in the caller's transaction.
func migrateKeyIndex(pb *bolt.Bucket) error {
	old := pb.Bucket(bucketKeysV1)
	if old == nil {
		return nil
	}
	keys := pb.Bucket(bucketKeys)
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
		if !bytes.Equal(p, prefix) {
			if err := put(); err != nil {
				return err
			}
			prefix, offsets = slices.Clone(p), offsets[:0]
		}
		if seq != uint64(len(offsets))+1 {
			return fmt.Errorf("%w: key index entry %x: sequence %d after %d", core.ErrCorrupt, k, seq, len(offsets))
		}
		offsets = append(offsets, binary.BigEndian.Uint64(v))
	}
	if err := put(); err != nil {
		return err
	}
	return pb.DeleteBucket(bucketKeysV1)
}

func (v *layers) keysBucket(p core.Partition, slot int) *bolt.Bucket {
	if v.keyBkts == nil {
		v.keyBkts = make([]*bolt.Bucket, len(v.active.start))
	}
	if v.keyBkts[slot] == nil {
		v.keyBkts[slot] = v.tx.Bucket(partitionBucketName(p)).Bucket(bucketKeys)
	}
	return v.keyBkts[slot]
}

// keyRun is key's run in the newest table that has one, else nil.
func (v *layers) keyRun(slot int, key string) *memKey {
	if mk := v.active.keys[slot][key]; mk != nil {
		return mk
	}
	if v.frozen != nil {
		return v.frozen.keys[slot][key]
	}
	return nil
}

// keyHead is the current sequence of key in partition p (at slot): the
// end of its run in the newest table that has one, else its last entry in
// the file.
func (v *layers) keyHead(p core.Partition, slot int, key string) uint64 {
	if mk := v.keyRun(slot, key); mk != nil {
		return mk.last()
	}
	return keyHeadIn(v.keysBucket(p, slot), key)
}

// ID returns where id was appended, from the tables or else the file,
// whether or not it has expired.
func (v *layers) ID(id uuid.UUID) (IDEntry, bool, error) {
	if e, ok := v.active.ids[id]; ok {
		return e, true, nil
	}
	if v.frozen != nil {
		if e, ok := v.frozen.ids[id]; ok {
			return e, true, nil
		}
	}
	if v.ids == nil {
		v.ids = v.tx.Bucket(bucketIDs)
		v.maxID, _ = v.ids.Cursor().Last()
	}
	if v.maxID == nil || bytes.Compare(id[:], v.maxID) > 0 {
		return IDEntry{}, false, nil
	}
	b := v.ids.Get(id[:])
	if b == nil {
		return IDEntry{}, false, nil
	}
	e, err := decodeIDEntry(b)
	return e, err == nil, err
}

// keyOffset is the offset of key's record with sequence seq.
func (v *layers) keyOffset(p core.Partition, slot int, key string, seq uint64) (uint64, bool) {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m == nil {
			continue
		}
		if mk := m.keys[slot][key]; mk != nil && seq >= mk.first {
			if seq > mk.last() {
				return 0, false
			}
			return mk.offsets[seq-mk.first], true
		}
	}
	if seq == 0 {
		return 0, false
	}
	b := v.keysBucket(p, slot).Get(keyChunkKey(nil, wire.AppendString(nil, key), seq))
	i := int((seq-1)%keyChunk) * 8
	if len(b) < i+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[i:]), true
}

// record is the stored record at offset off of partition p (at slot).
func (v *layers) record(p core.Partition, slot int, off uint64) []byte {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m != nil && off >= m.start[slot] {
			if off >= m.end(slot) {
				return nil
			}
			return m.recs[slot][off-m.start[slot]]
		}
	}
	return v.tx.Bucket(partitionBucketName(p)).Bucket(bucketRecs).Get(be64(off))
}
