package state

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Stored record (value of the partition's record bucket, keyed by offset):
//
//	byte     record format version (1)
//	string   key
//	uvarint  key sequence
//	16 bytes ID
//	varint   time, Unix nanoseconds
//	uvarint  header count, (string key, bytes value)*
//	bytes    value
const recordFormatV1 byte = 1

// encodeRecord appends the stored form of a record to b.
func encodeRecord(b []byte, key string, keySeq uint64, rec *core.NewRecord, rawHeaders []byte, t int64) []byte {
	b = append(b, recordFormatV1)
	b = wire.AppendString(b, key)
	b = binary.AppendUvarint(b, keySeq)
	b = append(b, rec.ID[:]...)
	b = binary.AppendVarint(b, t)
	if rawHeaders != nil {
		b = append(b, rawHeaders...) // as decoded from the entry: the same form
	} else {
		b = wire.AppendHeaders(b, rec.Headers)
	}
	return wire.AppendBytes(b, rec.Value)
}

// decodeRecord decodes a stored record. The result copies everything it
// needs, so b may be memory owned by a read transaction.
func decodeRecord(b []byte, partition core.Partition, offset uint64) (core.Record, error) {
	d := wire.Decoder{B: b}
	if v := d.Byte(); d.Err == nil && v != recordFormatV1 {
		return core.Record{}, fmt.Errorf("%w: record format %d", core.ErrCorrupt, v)
	}
	r := core.Record{Partition: partition, Offset: offset}
	r.Key = d.Str()
	r.KeySeq = d.Uvarint()
	r.ID = d.ID()
	r.Time = time.Unix(0, d.Varint()).UTC()
	r.Headers = d.Headers()
	r.Value = d.Bytes()
	if d.Err == nil && len(d.B) != 0 {
		d.Fail()
	}
	if d.Err != nil {
		return core.Record{}, d.Err
	}
	return r, nil
}

// IDEntry is the value of the record-ID index: where the first record of
// a run of IDs went (idrun.go), and the run's length, Count (at least 1).
//
//	uvarint partition, uvarint offset, uvarint key sequence, varint time,
//	uvarint Count - 1, omitted when 0 (as in files from before runs)
type IDEntry struct {
	Partition core.Partition
	Offset    uint64
	KeySeq    uint64
	Time      int64
	Count     uint64
}

func encodeIDEntry(b []byte, e IDEntry) []byte {
	b = binary.AppendUvarint(b, uint64(e.Partition))
	b = binary.AppendUvarint(b, e.Offset)
	b = binary.AppendUvarint(b, e.KeySeq)
	b = binary.AppendVarint(b, e.Time)
	if e.Count > 1 {
		b = binary.AppendUvarint(b, e.Count-1)
	}
	return b
}

func decodeIDEntry(b []byte) (IDEntry, error) {
	d := wire.Decoder{B: b}
	var e IDEntry
	e.Partition = core.Partition(d.Uvarint())
	e.Offset = d.Uvarint()
	e.KeySeq = d.Uvarint()
	e.Time = d.Varint()
	e.Count = 1
	if d.Err == nil && len(d.B) != 0 {
		e.Count += d.Uvarint()
		if d.Err == nil && (len(d.B) != 0 || e.Count < 2 || e.Count > maxIDRun) {
			d.Fail()
		}
	}
	return e, d.Err
}

// storedKeySeq returns the key and key sequence of a stored record without
// decoding the rest; the key aliases b.
func storedKeySeq(b []byte) ([]byte, uint64, error) {
	d := wire.Decoder{B: b}
	if v := d.Byte(); d.Err == nil && v != recordFormatV1 {
		return nil, 0, fmt.Errorf("%w: record format %d", core.ErrCorrupt, v)
	}
	key := d.Raw(d.Uvarint())
	seq := d.Uvarint()
	return key, seq, d.Err
}

// keyMeta is the state of a key that was deleted or truncated; keys without
// one have none. Stored in the partition's meta bucket under the key.
//
//	uvarint  floor: records with a lower key sequence are hidden
//	uvarint  erased: records below it are gone from the state file
//	byte     1 if the key is soft-deleted, else 0
//
// In memory, erased is as loaded from the file and carried over by a
// recreate, not kept current: the flusher takes where erasure stopped
// from the file itself (flushKeyMeta).
type keyMeta struct {
	floor   uint64
	erased  uint64
	deleted bool
}

func encodeKeyMeta(b []byte, m keyMeta) []byte {
	b = binary.AppendUvarint(b, m.floor)
	b = binary.AppendUvarint(b, m.erased)
	if m.deleted {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeKeyMeta(b []byte) (keyMeta, error) {
	d := wire.Decoder{B: b}
	m := keyMeta{floor: d.Uvarint(), erased: d.Uvarint()}
	switch d.Byte() {
	case 0:
	case 1:
		m.deleted = true
	default:
		d.Fail()
	}
	if d.Err == nil && len(d.B) != 0 {
		d.Fail()
	}
	return m, d.Err
}
