package state

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Index values carry their own checksum: bbolt verifies its meta pages
// only, so a byte changed in a branch or leaf page would otherwise be
// served as truth. Every value the engine stores in the index is the
// payload followed by the CRC-32C of the bbolt key and the payload (4
// bytes, big endian): a value damaged in place, or moved under another
// key, fails the check. Only the meta bucket's format key is stored bare,
// so that any version can tell which format a file holds.

const valueCRCLen = 4

// errValueCRC is the error of a value whose checksum does not match.
var errValueCRC = fmt.Errorf("%w: index value fails its checksum", core.ErrCorrupt)

func valueCRC(key, payload []byte) uint32 {
	return crc32.Update(crc32c(key), castagnoli, payload)
}

// sealValue appends payload and its checksum under key to b.
func sealValue(b, key, payload []byte) []byte {
	b = append(b, payload...)
	return binary.BigEndian.AppendUint32(b, valueCRC(key, payload))
}

// openValue verifies a stored value of key and returns its payload, which
// aliases v.
func openValue(key, v []byte) ([]byte, error) {
	if len(v) < valueCRCLen {
		return nil, fmt.Errorf("%w: key %x: %d bytes", errValueCRC, key, len(v))
	}
	p := v[:len(v)-valueCRCLen]
	if binary.BigEndian.Uint32(v[len(p):]) != valueCRC(key, p) {
		return nil, fmt.Errorf("%w: key %x", errValueCRC, key)
	}
	return p, nil
}

// putValue stores payload under key with its checksum. The value is a new
// allocation (bbolt keeps it until the commit).
func putValue(b *bolt.Bucket, key, payload []byte) error {
	return b.Put(key, sealValue(make([]byte, 0, len(payload)+valueCRCLen), key, payload))
}

// putValueIn is putValue with the value carved from a (a flush puts many).
func putValueIn(a *arena, b *bolt.Bucket, key, payload []byte) error {
	return b.Put(key, sealValue(a.alloc(len(payload) + valueCRCLen)[:0], key, payload))
}

// getValue returns the verified payload under key, nil if there is none.
func getValue(b *bolt.Bucket, key []byte) ([]byte, error) {
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	return openValue(key, v)
}

// getUint64 returns the big-endian uint64 under key, 0 if there is none.
func getUint64(b *bolt.Bucket, key []byte) (uint64, error) {
	v, err := getValue(b, key)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: key %q holds %d bytes", core.ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func putUint64(b *bolt.Bucket, key []byte, v uint64) error { return putValue(b, key, be64(v)) }

// indexError wraps an error found in the index file path as an
// ErrCorrupt naming the file.
func indexError(path string, err error) error {
	return &CorruptError{File: path, Offset: -1, Partition: -1, What: err.Error()}
}
