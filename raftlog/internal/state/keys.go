package state

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// ListedKey is a key of a partition as Keys lists it.
type ListedKey struct {
	Key     string
	Seq     uint64 // its current sequence
	Deleted bool
}

// KeyBefore reports whether key a comes before key b in the order Keys
// lists them: shorter keys first, then bytewise (so "order-9" comes
// before "order-10"). This is the key index's own order within one
// length, which lets a page start with one B-tree seek per length.
func KeyBefore(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// Keys returns up to limit keys of partition p that start with prefix and
// come after the key after (none: "") in KeyBefore order, with their
// current sequence. It reads the key index, never the records: in the
// state file the chunks of bucket kc, whose keys are the key's uvarint
// length, the key and the chunk number, so the keys of one length that
// share a prefix are contiguous; and the key runs of the tables not yet
// flushed. A key whose records were all deleted or truncated is listed
// (with Deleted set for a deletion): it keeps its sequence.
func (f *Engine) Keys(p core.Partition, prefix, after string, limit int) ([]ListedKey, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []ListedKey
	err := f.readView(func(v *layers) error {
		slot, ok := f.slot(p)
		if !ok {
			return nil
		}
		keys := fileKeys(v.keysBucket(p, slot), prefix, after, limit)
		for _, m := range v.tables() {
			for k := range m.keys[slot] {
				if strings.HasPrefix(k, prefix) && (after == "" || KeyBefore(after, k)) {
					keys = append(keys, k)
				}
			}
		}
		sort.Slice(keys, func(i, j int) bool { return KeyBefore(keys[i], keys[j]) })
		keys = slices.Compact(keys)
		if len(keys) > limit {
			keys = keys[:limit]
		}
		out = make([]ListedKey, len(keys))
		for i, k := range keys {
			seq, err := v.keyHead(p, slot, k)
			if err != nil {
				return err
			}
			out[i] = ListedKey{Key: k, Seq: seq}
			if km := f.meta[slot][k]; km != nil {
				out[i].Deleted = km.deleted
			}
		}
		return nil
	})
	return out, err
}

// fileKeys returns up to limit keys of the index in keys that start with
// prefix and come after the key after, in KeyBefore order. It seeks once
// per key length in use (the index sorts by the uvarint of the length
// first, which is not numeric order past 127, so lengths are walked in
// turn) and once per key listed, past the key's chunks.
func fileKeys(keys *bolt.Bucket, prefix, after string, limit int) []string {
	c := keys.Cursor()
	minLen := max(len(prefix), 1)
	if after != "" && len(after) > minLen {
		minLen = len(after)
	}
	// Keys of 128 bytes or more have a two-byte length whose first byte is
	// 0x80 or above: when there are none, the walk stops at 127.
	long, _ := c.Seek([]byte{0x80})
	var out []string
	for n := minLen; n <= core.MaxKeyBytes && len(out) < limit; n++ {
		if n >= 128 && long == nil {
			break
		}
		lenPrefix := binary.AppendUvarint(nil, uint64(n))
		want := append(slices.Clip(lenPrefix), prefix...)
		seek := want
		if n == len(after) && strings.HasPrefix(after, prefix) {
			// Past after's own chunks: no chunk number reaches 2^64-1.
			seek = binary.BigEndian.AppendUint64(append(slices.Clip(lenPrefix), after...), ^uint64(0))
		}
		k, _ := c.Seek(seek)
		for k != nil && bytes.HasPrefix(k, want) && len(out) < limit {
			if len(k) != len(lenPrefix)+n+8 {
				break // cannot happen in a sound index: the length names the key's size
			}
			key := k[len(lenPrefix) : len(lenPrefix)+n]
			if after == "" || n > len(after) || string(key) > after {
				out = append(out, string(key))
			}
			k, _ = c.Seek(binary.BigEndian.AppendUint64(append(slices.Clip(lenPrefix), key...), ^uint64(0)))
		}
		if n < 128 && (k == nil || !bytes.HasPrefix(k, lenPrefix)) {
			// Skip the lengths the index has no key of: the entry found
			// is the first of the next length in use below 128.
			switch {
			case k == nil || k[0] >= 0x80:
				n = 127
			case int(k[0]) > n+1:
				n = int(k[0]) - 1
			}
		}
	}
	return out
}

// GroupNames returns the names of the consumer groups this shard holds
// (shard 0, the coordinator, holds them all), sorted.
func (f *Engine) GroupNames() []string {
	f.mu.RLock()
	names := make([]string, 0, len(f.cgroups))
	for n := range f.cgroups {
		names = append(names, n)
	}
	f.mu.RUnlock()
	sort.Strings(names)
	return names
}
