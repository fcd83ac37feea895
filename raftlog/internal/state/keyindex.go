package state

import (
	"bytes"
	"encoding/binary"
	"fmt"

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
// stay identical. Each value carries its checksum (index.go).
const keyChunk = 16

// keyChunkKey is the index entry key of (prefix, the chunk of seq), where
// prefix is appendString(nil, key). seq must be at least 1.
func keyChunkKey(b, prefix []byte, seq uint64) []byte {
	b = append(b[:0], prefix...)
	return binary.BigEndian.AppendUint64(b, (seq-1)/keyChunk)
}

// keyHeadIn returns the current sequence of key in the state file: the
// last sequence its index holds, 0 if it has none.
func keyHeadIn(keys *bolt.Bucket, key string) (uint64, error) {
	prefix := wire.AppendString(nil, key)
	c := keys.Cursor()
	k, v := c.Seek(binary.BigEndian.AppendUint64(prefix, ^uint64(0))) // prefix[:len] unchanged
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
		return 0, nil
	}
	v, err := openKeyChunk(k, v)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(k[len(prefix):])*keyChunk + uint64(len(v)/8), nil
}

// openKeyChunk verifies a key index value and returns its offsets.
func openKeyChunk(k, v []byte) ([]byte, error) {
	p, err := openValue(k, v)
	if err == nil && (len(p)%8 != 0 || len(p) > 8*keyChunk) {
		err = fmt.Errorf("%w: key index chunk %x of %d bytes", core.ErrCorrupt, k, len(p))
	}
	return p, err
}

// eachKeyOffset calls fn with the sequence and offset of each record of
// key the state file's index holds from sequence from on, in order, until
// fn returns false or an error.
func eachKeyOffset(keys *bolt.Bucket, key string, from uint64, fn func(seq, off uint64) (bool, error)) error {
	from = max(from, 1)
	prefix := wire.AppendString(nil, key)
	c := keys.Cursor()
	for k, v := c.Seek(keyChunkKey(nil, prefix, from)); k != nil && len(k) == len(prefix)+8 && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		v, err := openKeyChunk(k, v)
		if err != nil {
			return err
		}
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
			var err error
			if old, err = getValue(keys, ck); err != nil {
				return err
			}
		}
		if len(old) != 8*pos {
			return fmt.Errorf("%w: key index chunk %x holds %d offsets, sequence %d follows %d", core.ErrCorrupt, ck, len(old)/8, seq, pos)
		}
		v := alloc(len(old) + 8*n + valueCRCLen)[:0]
		v = append(v, old...)
		for _, off := range offsets[j : j+n] {
			v = binary.BigEndian.AppendUint64(v, off)
		}
		v = binary.BigEndian.AppendUint32(v, valueCRC(ck, v))
		if err := keys.Put(ck, v); err != nil {
			return err
		}
		seq += uint64(n)
		j += n
	}
	return nil
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
func (v *layers) keyHead(p core.Partition, slot int, key string) (uint64, error) {
	if mk := v.keyRun(slot, key); mk != nil {
		return mk.last(), nil
	}
	return keyHeadIn(v.keysBucket(p, slot), key)
}

// keyOffset is the offset of key's record with sequence seq.
func (v *layers) keyOffset(p core.Partition, slot int, key string, seq uint64) (uint64, bool, error) {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m == nil {
			continue
		}
		if mk := m.keys[slot][key]; mk != nil && seq >= mk.first {
			if seq > mk.last() {
				return 0, false, nil
			}
			return mk.offsets[seq-mk.first], true, nil
		}
	}
	if seq == 0 {
		return 0, false, nil
	}
	ck := keyChunkKey(nil, wire.AppendString(nil, key), seq)
	b := v.keysBucket(p, slot).Get(ck)
	if b == nil {
		return 0, false, nil
	}
	b, err := openKeyChunk(ck, b)
	i := int((seq-1)%keyChunk) * 8
	if err != nil || len(b) < i+8 {
		return 0, false, err
	}
	return binary.BigEndian.Uint64(b[i:]), true, nil
}

// record calls fn with the stored record at offset off of partition p
// (at slot), from the tables or else the segments; not at all if there is
// none. The record is valid only during the call.
func (v *layers) record(p core.Partition, slot int, off uint64, fn func(rec []byte) error) error {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m != nil && off >= m.start[slot] {
			if off >= m.end(slot) {
				return nil
			}
			return fn(m.recs[slot][off-m.start[slot]])
		}
	}
	return v.f.scanSegments(v.tx, p, off, off+1, func(_ uint64, rec []byte) (bool, error) {
		return false, fn(rec)
	})
}
