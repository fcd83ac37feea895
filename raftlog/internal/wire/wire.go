// Package wire is the encoding of what the log replicates and what nodes
// send each other: raft entries (a command byte, then a batch of append
// requests or one consumer group operation) and the primitives every other
// encoding of raftlog is built from. Decoders check every count against the
// Bytes that remain before they allocate, so a corrupt or hostile input can
// neither panic a decoder nor make it allocate more than its own size.
//
// It imports only core.
package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// On-disk and on-wire encodings. Every integer is a varint (encoding/binary),
// every string or byte slice is a uvarint length followed by the bytes. Counts
// are checked against the bytes that remain before anything is allocated, so
// a corrupt or hostile input can neither panic a decoder nor make it allocate
// more than the input's own size.
//
// Raft Entry (one group-commit batch):
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
// Command types of raft entries. An unknown type is a bug or a newer
// version's Entry: the FSM panics rather than diverge from its peers.
const (
	CmdAppend byte = 1
	CmdGroup  byte = 2 // one consumer group operation (groups.go)
	// CmdClusterID proposes the cluster's identity: the command byte, then
	// the 16 bytes of a UUID. The first one applied wins (state).
	CmdClusterID byte = 3
)

// Request flags. reqDelete and reqTruncate make the request an operation
// on the key instead of an append: such a request carries no records.
const (
	ReqExpected uint64 = 1 << iota // the key must be at sequence Expected
	ReqExists                      // the key must exist (records, not deleted)
	ReqAbsent                      // the key must not exist (no records, or deleted)
	ReqRecreate                    // an append may recreate a deleted key
	ReqDelete                      // soft-delete the key
	ReqTruncate                    // hide and erase the key's records before Before
	reqAllFlags = ReqExpected | ReqExists | ReqAbsent | ReqRecreate | ReqDelete | ReqTruncate
)

// Request is one Append (or key operation) as carried inside a raft
// Entry.
type Request struct {
	Partition core.Partition
	Flags     uint64
	Expected  uint64 // with reqExpected
	Before    uint64 // with reqTruncate
	Key       string
	Records   []core.NewRecord
	// RawHeaders holds each record's encoded headers (as AppendHeaders
	// writes them) instead of Records[i].Headers, when decoded with
	// Decoder.RawHeaders: nil if no record has any, and nil for a record
	// without any.
	RawHeaders [][]byte
}

func (r *Request) Has(flag uint64) bool { return r.Flags&flag != 0 }

// IsKeyOp reports whether the request deletes or truncates its key.
func (r *Request) IsKeyOp() bool { return r.Has(ReqDelete | ReqTruncate) }

// Entry is a decoded raft entry of type CmdAppend.
type Entry struct {
	Time     int64
	Requests []Request
}

func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func AppendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func AppendHeaders(b []byte, hs []core.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(hs)))
	for _, h := range hs {
		b = AppendString(b, h.Key)
		b = AppendBytes(b, h.Value)
	}
	return b
}

// RequestSize is an upper bound of the length of r's wire form.
func RequestSize(r *Request) int {
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

// EncodeRequest appends the wire form of r to b.
func EncodeRequest(b []byte, r *Request) []byte {
	b = binary.AppendUvarint(b, uint64(r.Partition))
	b = binary.AppendUvarint(b, r.Flags)
	if r.Has(ReqExpected) {
		b = binary.AppendUvarint(b, r.Expected)
	}
	if r.Has(ReqTruncate) {
		b = binary.AppendUvarint(b, r.Before)
	}
	b = AppendString(b, r.Key)
	b = binary.AppendUvarint(b, uint64(len(r.Records)))
	for i := range r.Records {
		rec := &r.Records[i]
		b = append(b, rec.ID[:]...)
		b = AppendHeaders(b, rec.Headers)
		b = AppendBytes(b, rec.Value)
	}
	return b
}

// EncodeEntryHeader starts a raft entry holding n requests stamped with t.
func EncodeEntryHeader(b []byte, t int64, n int) []byte {
	b = append(b, CmdAppend)
	b = binary.AppendVarint(b, t)
	return binary.AppendUvarint(b, uint64(n))
}

// Decoder reads the encodings above from a byte slice, remembering the
// first error; after an error every read returns a zero value.
type Decoder struct {
	B   []byte // what is left to read
	Err error  // the first error
	// Alias makes Bytes return slices of B instead of copies (strings are
	// always copied).
	Alias bool
	// RawHeaders makes Request keep each record's headers in their encoded
	// form (Request.RawHeaders, slices of B) instead of decoding them:
	// what the state machine stores is that form, re-encoded.
	RawHeaders bool
}

func (d *Decoder) Fail() {
	if d.Err == nil {
		d.Err = core.ErrCorrupt
	}
	d.B = nil
}

func (d *Decoder) Uvarint() uint64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.B)
	if n <= 0 {
		d.Fail()
		return 0
	}
	d.B = d.B[n:]
	return v
}

func (d *Decoder) Varint() int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Varint(d.B)
	if n <= 0 {
		d.Fail()
		return 0
	}
	d.B = d.B[n:]
	return v
}

func (d *Decoder) Byte() byte {
	if d.Err != nil || len(d.B) < 1 {
		d.Fail()
		return 0
	}
	c := d.B[0]
	d.B = d.B[1:]
	return c
}

// Count reads a count of items each taking at least min bytes, rejecting
// counts the remaining input cannot hold.
func (d *Decoder) Count(min int) int {
	n := d.Uvarint()
	if d.Err != nil {
		return 0
	}
	if n > uint64(len(d.B)/min) {
		d.Fail()
		return 0
	}
	return int(n)
}

// Raw returns the next n bytes without copying.
func (d *Decoder) Raw(n uint64) []byte {
	if d.Err != nil {
		return nil
	}
	if n > uint64(len(d.B)) {
		d.Fail()
		return nil
	}
	p := d.B[:n:n]
	d.B = d.B[n:]
	return p
}

func (d *Decoder) Bytes() []byte {
	n := d.Uvarint()
	p := d.Raw(n)
	if p == nil || len(p) == 0 {
		return nil
	}
	if d.Alias {
		return p
	}
	return append([]byte(nil), p...)
}

// Finish fails the decoder if input is left over, and returns its error:
// the end of every decoder of a whole message.
func (d *Decoder) Finish() error {
	if d.Err == nil && len(d.B) != 0 {
		d.Fail()
	}
	return d.Err
}

// Str reads a string (a uvarint length and the bytes).
func (d *Decoder) Str() string { return string(d.Raw(d.Uvarint())) }

func (d *Decoder) ID() uuid.UUID {
	var id uuid.UUID
	copy(id[:], d.Raw(16))
	return id
}

func (d *Decoder) Headers() []core.Header {
	n := d.Count(2)
	if n == 0 {
		return nil
	}
	hs := make([]core.Header, n)
	for i := range hs {
		hs[i].Key = d.Str()
		hs[i].Value = d.Bytes()
	}
	return hs
}

// rawHeaders checks and skips an encoded list of headers, and returns its
// bytes (a slice of B).
func (d *Decoder) rawHeaders() []byte {
	start := d.B
	for n := d.Count(2); n > 0 && d.Err == nil; n-- {
		d.Raw(d.Uvarint())
		d.Raw(d.Uvarint())
	}
	if d.Err != nil {
		return nil
	}
	return start[: len(start)-len(d.B) : len(start)-len(d.B)]
}

func (d *Decoder) Request() Request {
	var r Request
	p := d.Uvarint()
	if p > core.MaxPartitions {
		d.Fail()
	}
	r.Partition = core.Partition(p)
	r.Flags = d.Uvarint()
	if r.Flags&^reqAllFlags != 0 {
		d.Fail()
	}
	if r.Has(ReqExpected) {
		r.Expected = d.Uvarint()
	}
	if r.Has(ReqTruncate) {
		r.Before = d.Uvarint()
	}
	r.Key = d.Str()
	n := d.Count(16 + 2)
	if n > 0 {
		r.Records = make([]core.NewRecord, n)
		for i := range r.Records {
			rec := &r.Records[i]
			rec.ID = d.ID()
			if d.RawHeaders {
				// Made only for a request with headers: a record without
				// any needs none (its Headers, nil, encode the same).
				if raw := d.rawHeaders(); len(raw) > 1 {
					if r.RawHeaders == nil {
						r.RawHeaders = make([][]byte, n)
					}
					r.RawHeaders[i] = raw
				}
			} else {
				rec.Headers = d.Headers()
			}
			rec.Value = d.Bytes()
		}
	}
	return r
}

// DecodeRequest decodes one request as encoded by encodeRequest, rejecting
// trailing bytes.
func DecodeRequest(b []byte) (Request, error) {
	d := Decoder{B: b}
	r := d.Request()
	return r, d.Finish()
}

// DecodeEntry decodes a raft entry's data. Record values and header values
// are slices of b, not copies: the entry is only read while it is applied,
// and what the state keeps is re-encoded from it.
func DecodeEntry(b []byte) (Entry, error) {
	d := Decoder{B: b, Alias: true, RawHeaders: true}
	var e Entry
	if t := d.Byte(); d.Err == nil && t != CmdAppend {
		return e, fmt.Errorf("%w: unknown command type %d", core.ErrCorrupt, t)
	}
	e.Time = d.Varint()
	n := d.Count(4)
	if n > 0 {
		e.Requests = make([]Request, n)
		for i := range e.Requests {
			e.Requests[i] = d.Request()
		}
	}
	if d.Finish() != nil {
		return Entry{}, d.Err
	}
	return e, nil
}

// Group operations.
const (
	GopJoin      byte = 1
	GopHeartbeat byte = 2
	GopLeave     byte = 3
	GopCommit    byte = 4
	GopRetry     byte = 5
	// GopJoinAt is a join that names where a group it creates starts: the
	// offset of every partition. Joining an existing group ignores them.
	GopJoinAt byte = 6
	// GopReset sets every partition's committed offset of a group with no
	// live members; GopDelete removes such a group.
	GopReset  byte = 7
	GopDelete byte = 8
	// GopSkip marks a parked record to be dropped unhandled by the
	// partition's owner (an operator's decision, counted in the group's
	// state once the owner has done it).
	GopSkip byte = 9
	// GopForceReset is GopReset of a group whatever its members: they are
	// removed (fenced: their commits are refused as of a stale
	// generation, their heartbeats as of unknown members) and join again
	// to resume from the new offsets. New in the entry format after
	// GopSkip: a node of an older version skips it as an unknown
	// operation (its FSM logs the entry as rejected and applies on), so
	// its copy of the group keeps the fenced members and their grants and
	// differs from the others' from then on: a node proposes it only once
	// every member says it knows it (route.FeatureForceReset).
	GopForceReset byte = 10
)

// GroupOp is one operation on a consumer group, as carried in a raft entry
// of type cmdGroup.
type GroupOp struct {
	Op        byte
	Group     string
	Member    string
	Session   int64               // join: nanoseconds
	Release   []core.Partition    // heartbeat: partitions released
	Commits   []core.OffsetCommit // commit
	Partition core.Partition      // retry, skip
	Offset    uint64              // retry, skip
	Offsets   []uint64            // join at, reset: one per partition
}

// memberless reports an operation of an operator rather than a member.
func (o *GroupOp) memberless() bool {
	return o.Op == GopRetry || o.Op == GopSkip || o.Op == GopReset || o.Op == GopForceReset || o.Op == GopDelete
}

// Check reports what makes o unfit to apply: an empty or oversized group
// or member name (names are state-file keys), or a join without a positive
// session. The state machine rejects such an operation with this error on
// every replica alike; nodes check it before proposing.
func (o *GroupOp) Check() error {
	switch {
	case o.Group == "" || len(o.Group) > core.MaxKeyBytes:
		return fmt.Errorf("%w: group name of %d bytes (1..%d)", core.ErrConfig, len(o.Group), core.MaxKeyBytes)
	case !o.memberless() && (o.Member == "" || len(o.Member) > core.MaxKeyBytes):
		return fmt.Errorf("%w: member name of %d bytes (1..%d)", core.ErrConfig, len(o.Member), core.MaxKeyBytes)
	case o.memberless() && o.Member != "":
		return fmt.Errorf("%w: a group operation of an operator names no member", core.ErrConfig)
	case (o.Op == GopJoin || o.Op == GopJoinAt) && o.Session <= 0:
		return fmt.Errorf("%w: a join needs a positive session timeout", core.ErrConfig)
	case (o.Op == GopJoinAt || o.Op == GopReset || o.Op == GopForceReset) && (len(o.Offsets) == 0 || len(o.Offsets) > core.MaxPartitions):
		return fmt.Errorf("%w: %d start offsets (one per partition)", core.ErrConfig, len(o.Offsets))
	case o.Op < GopJoin || o.Op > GopForceReset:
		return fmt.Errorf("%w: unknown group operation %d", core.ErrConfig, o.Op)
	}
	return nil
}

func EncodeGroupOp(b []byte, o *GroupOp) []byte {
	b = append(b, o.Op)
	b = AppendString(b, o.Group)
	b = AppendString(b, o.Member)
	switch o.Op {
	case GopJoin:
		b = binary.AppendUvarint(b, uint64(o.Session))
	case GopHeartbeat:
		b = binary.AppendUvarint(b, uint64(len(o.Release)))
		for _, p := range o.Release {
			b = binary.AppendUvarint(b, uint64(p))
		}
	case GopCommit:
		b = binary.AppendUvarint(b, uint64(len(o.Commits)))
		for _, c := range o.Commits {
			b = binary.AppendUvarint(b, uint64(c.Partition))
			b = binary.AppendUvarint(b, c.Generation)
			b = binary.AppendUvarint(b, c.Offset)
			b = AppendParked(b, c.Park)
			b = binary.AppendUvarint(b, uint64(len(c.Unpark)))
			for _, off := range c.Unpark {
				b = binary.AppendUvarint(b, off)
			}
		}
	case GopRetry, GopSkip:
		b = binary.AppendUvarint(b, uint64(o.Partition))
		b = binary.AppendUvarint(b, o.Offset)
	case GopJoinAt:
		b = binary.AppendUvarint(b, uint64(o.Session))
		b = appendOffsets(b, o.Offsets)
	case GopReset, GopForceReset:
		b = appendOffsets(b, o.Offsets)
	}
	return b
}

func appendOffsets(b []byte, offs []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(offs)))
	for _, off := range offs {
		b = binary.AppendUvarint(b, off)
	}
	return b
}

func (d *Decoder) offsets() []uint64 {
	n := d.Count(1)
	offs := make([]uint64, n)
	for i := range offs {
		offs[i] = d.Uvarint()
	}
	return offs
}

// The flags byte of a parked record: what an operator asked of its
// owner. Records written before skips existed have 0 or 1.
const (
	parkedRetry byte = 1 << iota
	parkedSkip
)

func AppendParked(b []byte, ps []core.ParkedRecord) []byte {
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = binary.AppendUvarint(b, p.Offset)
		b = AppendString(b, p.Key)
		b = AppendString(b, p.Error)
		b = binary.AppendUvarint(b, uint64(p.Attempts))
		var flags byte
		if p.Retry {
			flags |= parkedRetry
		}
		if p.Skip {
			flags |= parkedSkip
		}
		b = append(b, flags)
	}
	return b
}

func (d *Decoder) Parked() []core.ParkedRecord {
	n := d.Count(5)
	if n == 0 {
		return nil
	}
	ps := make([]core.ParkedRecord, n)
	for i := range ps {
		ps[i] = core.ParkedRecord{Offset: d.Uvarint(), Key: d.Str(), Error: d.Str(), Attempts: int(d.Uvarint())}
		flags := d.Byte()
		if flags&^(parkedRetry|parkedSkip) != 0 {
			d.Fail()
		}
		ps[i].Retry, ps[i].Skip = flags&parkedRetry != 0, flags&parkedSkip != 0
	}
	return ps
}

func (d *Decoder) GroupOp() GroupOp {
	o := GroupOp{Op: d.Byte(), Group: d.Str(), Member: d.Str()}
	switch o.Op {
	case GopJoin:
		o.Session = int64(d.Uvarint())
	case GopHeartbeat:
		n := d.Count(1)
		for i := 0; i < n; i++ {
			o.Release = append(o.Release, core.Partition(d.Uvarint()))
		}
	case GopCommit:
		n := d.Count(4)
		for i := 0; i < n; i++ {
			c := core.OffsetCommit{Partition: core.Partition(d.Uvarint()), Generation: d.Uvarint(), Offset: d.Uvarint()}
			c.Park = d.Parked()
			m := d.Count(1)
			for j := 0; j < m; j++ {
				c.Unpark = append(c.Unpark, d.Uvarint())
			}
			o.Commits = append(o.Commits, c)
		}
	case GopLeave, GopDelete:
	case GopRetry, GopSkip:
		o.Partition, o.Offset = core.Partition(d.Uvarint()), d.Uvarint()
	case GopJoinAt:
		o.Session = int64(d.Uvarint())
		o.Offsets = d.offsets()
	case GopReset, GopForceReset:
		o.Offsets = d.offsets()
	default:
		d.Fail()
	}
	return o
}

// EncodeGroupEntry is a raft entry holding one consumer group operation:
// command type, leader time, the operation.
func EncodeGroupEntry(t int64, op *GroupOp) []byte {
	b := []byte{CmdGroup}
	b = binary.AppendVarint(b, t)
	return EncodeGroupOp(b, op)
}

func DecodeGroupEntry(b []byte) (int64, GroupOp, error) {
	d := Decoder{B: b}
	if c := d.Byte(); d.Err == nil && c != CmdGroup {
		return 0, GroupOp{}, fmt.Errorf("%w: not a group Entry", core.ErrCorrupt)
	}
	t := d.Varint()
	op := d.GroupOp()
	return t, op, d.Finish()
}

// EncodeClusterID returns the raft entry that proposes id as the cluster's
// identity.
func EncodeClusterID(id uuid.UUID) []byte {
	return append([]byte{CmdClusterID}, id[:]...)
}

// DecodeClusterID decodes an entry of type CmdClusterID.
func DecodeClusterID(b []byte) (uuid.UUID, error) {
	d := Decoder{B: b}
	if c := d.Byte(); d.Err == nil && c != CmdClusterID {
		return uuid.UUID{}, fmt.Errorf("%w: not a cluster ID Entry", core.ErrCorrupt)
	}
	id := d.ID()
	if err := d.Finish(); err != nil {
		return uuid.UUID{}, err
	}
	if id == (uuid.UUID{}) {
		return uuid.UUID{}, fmt.Errorf("%w: a nil cluster ID", core.ErrCorrupt)
	}
	return id, nil
}
