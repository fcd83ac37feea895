package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// On-disk and on-wire encodings. Every integer is a varint (encoding/binary),
// every string or byte slice is a uvarint length followed by the bytes. Counts
// are checked against the bytes that remain before anything is allocated, so
// a corrupt or hostile input can neither panic a decoder nor make it allocate
// more than the input's own size.
//
// Raft entry (one group-commit batch):
//
//	byte     command type (cmdAppend)
//	varint   leader time, Unix nanoseconds
//	uvarint  number of requests
//	request* (see encodeRequest)
//
// Append request:
//
//	uvarint  partition
//	uvarint  flags (reqExpected, reqExists, ...; see below)
//	uvarint  expected key sequence (only with reqExpected)
//	uvarint  truncate-before sequence (only with reqTruncate)
//	string   key
//	uvarint  number of records
//	record*: 16-byte ID, uvarint header count, (string key, bytes value)*, bytes value
//
// Stored record (value of the partition's record bucket, keyed by offset):
//
//	byte     record format version (1)
//	string   key
//	uvarint  key sequence
//	16 bytes ID
//	varint   time, Unix nanoseconds
//	uvarint  header count, (string key, bytes value)*
//	bytes    value

// Command types of raft entries. An unknown type is a bug or a newer
// version's entry: the FSM panics rather than diverge from its peers.
const (
	cmdAppend byte = 1
	cmdGroup  byte = 2 // one consumer group operation (groups.go)
)

const recordFormatV1 byte = 1

// errCorrupt is returned by decoders for input they cannot parse.
var errCorrupt = errors.New("raftlog: corrupt encoding")

// Request flags. reqDelete and reqTruncate make the request an operation
// on the key instead of an append: such a request carries no records.
const (
	reqExpected uint64 = 1 << iota // the key must be at sequence Expected
	reqExists                      // the key must exist (records, not deleted)
	reqAbsent                      // the key must not exist (no records, or deleted)
	reqRecreate                    // an append may recreate a deleted key
	reqDelete                      // soft-delete the key
	reqTruncate                    // hide and erase the key's records before Before
	reqAllFlags = reqExpected | reqExists | reqAbsent | reqRecreate | reqDelete | reqTruncate
)

// appendRequest is one Append (or key operation) as carried inside a raft
// entry.
type appendRequest struct {
	Partition int
	Flags     uint64
	Expected  uint64 // with reqExpected
	Before    uint64 // with reqTruncate
	Key       string
	Records   []NewRecord
}

func (r *appendRequest) has(flag uint64) bool { return r.Flags&flag != 0 }

// isKeyOp reports whether the request deletes or truncates its key.
func (r *appendRequest) isKeyOp() bool { return r.has(reqDelete | reqTruncate) }

// entry is a decoded raft entry of type cmdAppend.
type entry struct {
	Time     int64
	Requests []appendRequest
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendHeaders(b []byte, hs []Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(hs)))
	for _, h := range hs {
		b = appendString(b, h.Key)
		b = appendBytes(b, h.Value)
	}
	return b
}

// requestSize is an upper bound of the length of r's wire form.
func requestSize(r *appendRequest) int {
	n := 4*binary.MaxVarintLen64 + len(r.Key)
	for i := range r.Records {
		rec := &r.Records[i]
		n += 16 + 2*binary.MaxVarintLen64 + len(rec.Value)
		for _, h := range rec.Headers {
			n += 2*binary.MaxVarintLen64 + len(h.Key) + len(h.Value)
		}
	}
	return n
}

// encodeRequest appends the wire form of r to b.
func encodeRequest(b []byte, r *appendRequest) []byte {
	b = binary.AppendUvarint(b, uint64(r.Partition))
	b = binary.AppendUvarint(b, r.Flags)
	if r.has(reqExpected) {
		b = binary.AppendUvarint(b, r.Expected)
	}
	if r.has(reqTruncate) {
		b = binary.AppendUvarint(b, r.Before)
	}
	b = appendString(b, r.Key)
	b = binary.AppendUvarint(b, uint64(len(r.Records)))
	for i := range r.Records {
		rec := &r.Records[i]
		b = append(b, rec.ID[:]...)
		b = appendHeaders(b, rec.Headers)
		b = appendBytes(b, rec.Value)
	}
	return b
}

// encodeEntryHeader starts a raft entry holding n requests stamped with t.
func encodeEntryHeader(b []byte, t int64, n int) []byte {
	b = append(b, cmdAppend)
	b = binary.AppendVarint(b, t)
	return binary.AppendUvarint(b, uint64(n))
}

// decoder reads the encodings above from a byte slice, remembering the
// first error; after an error every read returns a zero value.
type decoder struct {
	b   []byte
	err error
	// alias makes bytes() return slices of b instead of copies (strings
	// are always copied).
	alias bool
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// count reads a count of items each taking at least min bytes, rejecting
// counts the remaining input cannot hold.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

// raw returns the next n bytes without copying.
func (d *decoder) raw(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	p := d.raw(n)
	if p == nil || len(p) == 0 {
		return nil
	}
	if d.alias {
		return p
	}
	return append([]byte(nil), p...)
}

func (d *decoder) string() string { return string(d.raw(d.uvarint())) }

func (d *decoder) id() uuid.UUID {
	var id uuid.UUID
	copy(id[:], d.raw(16))
	return id
}

func (d *decoder) headers() []Header {
	n := d.count(2)
	if n == 0 {
		return nil
	}
	hs := make([]Header, n)
	for i := range hs {
		hs[i].Key = d.string()
		hs[i].Value = d.bytes()
	}
	return hs
}

func (d *decoder) request() appendRequest {
	var r appendRequest
	p := d.uvarint()
	if p > maxPartitions {
		d.fail()
	}
	r.Partition = int(p)
	r.Flags = d.uvarint()
	if r.Flags&^reqAllFlags != 0 {
		d.fail()
	}
	if r.has(reqExpected) {
		r.Expected = d.uvarint()
	}
	if r.has(reqTruncate) {
		r.Before = d.uvarint()
	}
	r.Key = d.string()
	n := d.count(16 + 2)
	if n > 0 {
		r.Records = make([]NewRecord, n)
		for i := range r.Records {
			rec := &r.Records[i]
			rec.ID = d.id()
			rec.Headers = d.headers()
			rec.Value = d.bytes()
		}
	}
	return r
}

// decodeRequest decodes one request as encoded by encodeRequest, rejecting
// trailing bytes.
func decodeRequest(b []byte) (appendRequest, error) {
	d := decoder{b: b}
	r := d.request()
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return r, d.err
}

// decodeEntry decodes a raft entry's data. Record values and header values
// are slices of b, not copies: the entry is only read while it is applied,
// and what the state keeps is re-encoded from it.
func decodeEntry(b []byte) (entry, error) {
	d := decoder{b: b, alias: true}
	var e entry
	if t := d.byte(); d.err == nil && t != cmdAppend {
		return e, fmt.Errorf("%w: unknown command type %d", errCorrupt, t)
	}
	e.Time = d.varint()
	n := d.count(4)
	if n > 0 {
		e.Requests = make([]appendRequest, n)
		for i := range e.Requests {
			e.Requests[i] = d.request()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return entry{}, d.err
	}
	return e, nil
}

// encodeRecord appends the stored form of a record to b.
func encodeRecord(b []byte, key string, keySeq uint64, rec *NewRecord, t int64) []byte {
	b = append(b, recordFormatV1)
	b = appendString(b, key)
	b = binary.AppendUvarint(b, keySeq)
	b = append(b, rec.ID[:]...)
	b = binary.AppendVarint(b, t)
	b = appendHeaders(b, rec.Headers)
	return appendBytes(b, rec.Value)
}

// decodeRecord decodes a stored record. The result copies everything it
// needs, so b may be memory owned by a read transaction.
func decodeRecord(b []byte, partition int, offset uint64) (Record, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != recordFormatV1 {
		return Record{}, fmt.Errorf("%w: record format %d", errCorrupt, v)
	}
	r := Record{Partition: partition, Offset: offset}
	r.Key = d.string()
	r.KeySeq = d.uvarint()
	r.ID = d.id()
	r.Time = time.Unix(0, d.varint()).UTC()
	r.Headers = d.headers()
	r.Value = d.bytes()
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

// idEntry is the value of the record-ID index: where the record went.
type idEntry struct {
	Partition int
	Offset    uint64
	KeySeq    uint64
	Time      int64
}

func encodeIDEntry(b []byte, e idEntry) []byte {
	b = binary.AppendUvarint(b, uint64(e.Partition))
	b = binary.AppendUvarint(b, e.Offset)
	b = binary.AppendUvarint(b, e.KeySeq)
	return binary.AppendVarint(b, e.Time)
}

func decodeIDEntry(b []byte) (idEntry, error) {
	d := decoder{b: b}
	var e idEntry
	e.Partition = int(d.uvarint())
	e.Offset = d.uvarint()
	e.KeySeq = d.uvarint()
	e.Time = d.varint()
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return e, d.err
}

// storedKeySeq returns the key and key sequence of a stored record without
// decoding the rest; the key aliases b.
func storedKeySeq(b []byte) ([]byte, uint64, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != recordFormatV1 {
		return nil, 0, fmt.Errorf("%w: record format %d", errCorrupt, v)
	}
	key := d.raw(d.uvarint())
	seq := d.uvarint()
	return key, seq, d.err
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
	d := decoder{b: b}
	m := keyMeta{floor: d.uvarint(), erased: d.uvarint()}
	switch d.byte() {
	case 0:
	case 1:
		m.deleted = true
	default:
		d.fail()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return m, d.err
}

// encodeGroupEntry is a raft entry holding one consumer group operation:
// command type, leader time, the operation.
func encodeGroupEntry(t int64, op *groupOp) []byte {
	b := []byte{cmdGroup}
	b = binary.AppendVarint(b, t)
	return encodeGroupOp(b, op)
}

func decodeGroupEntry(b []byte) (int64, groupOp, error) {
	d := decoder{b: b}
	if c := d.byte(); d.err == nil && c != cmdGroup {
		return 0, groupOp{}, fmt.Errorf("%w: not a group entry", errCorrupt)
	}
	t := d.varint()
	op := d.groupOp()
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return t, op, d.err
}
