package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
)

func testID(n int) uuid.UUID {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[8:], uint64(n))
	id[0] = 0xEE
	return id
}

func req(p core.Partition, key string, expect int64, ids ...int) Request {
	r := Request{Partition: p, Key: key}
	if expect >= 0 {
		r.Flags, r.Expected = ReqExpected, uint64(expect)
	}
	for _, id := range ids {
		r.Records = append(r.Records, core.NewRecord{
			ID:      testID(id),
			Headers: []core.Header{{Key: "h", Value: []byte(fmt.Sprint(id))}},
			Value:   []byte(fmt.Sprintf("value-%d", id)),
		})
	}
	return r
}

// keyOp is a delete (before 0) or truncate request on key.
func keyOp(p core.Partition, key string, expect int64, before uint64) Request {
	r := req(p, key, expect)
	if before == 0 {
		r.Flags |= ReqDelete
	} else {
		r.Flags, r.Before = r.Flags|ReqTruncate, before
	}
	return r
}

func TestCodecRoundTrip(t *testing.T) {
	r := req(7, "stream-1", 3, 1, 2, 3)
	b := EncodeRequest(nil, &r)
	got, err := DecodeRequest(b)
	require.NoError(t, err)
	require.Equal(t, r, got)

	data := EncodeEntryHeader(nil, 42, 2)
	r2 := req(0, "k", -1, 9)
	data = EncodeRequest(EncodeRequest(data, &r), &r2)
	e, err := DecodeEntry(data)
	require.NoError(t, err)
	// An entry's records keep their headers encoded, as the state stores them.
	raw := func(r Request) Request {
		r.Records = slices.Clone(r.Records)
		for i := range r.Records {
			r.RawHeaders = append(r.RawHeaders, AppendHeaders(nil, r.Records[i].Headers))
			r.Records[i].Headers = nil
		}
		return r
	}
	require.Equal(t, Entry{Time: 42, Requests: []Request{raw(r), raw(r2)}}, e)
	bare := Request{Key: "k", Records: []core.NewRecord{{Value: []byte("v")}, {Value: []byte("w")}}}
	e, err = DecodeEntry(EncodeRequest(EncodeEntryHeader(nil, 42, 1), &bare))
	require.NoError(t, err)
	require.Equal(t, Entry{Time: 42, Requests: []Request{bare}}, e, "no headers: nothing kept for them")

	withFlags := req(1, "k", -1, 5)
	withFlags.Flags |= ReqAbsent | ReqRecreate
	for _, op := range []Request{keyOp(2, "k", 4, 0), keyOp(3, "k", -1, 17), withFlags} {
		got, err := DecodeRequest(EncodeRequest(nil, &op))
		require.NoError(t, err)
		require.Equal(t, op, got)
	}
	bad := req(1, "k", -1, 5)
	bad.Flags = 1 << 10
	_, err = DecodeRequest(EncodeRequest(nil, &bad))
	require.Error(t, err, "unknown request flags")

	for _, op := range []GroupOp{
		{Op: GopJoin, Group: "g", Member: "m", Session: 5e9},
		{Op: GopHeartbeat, Group: "g", Member: "m", Release: []core.Partition{1, 2}},
		{Op: GopCommit, Group: "g", Member: "m", Commits: []core.OffsetCommit{{Partition: 1, Generation: 2, Offset: 3,
			Park: []core.ParkedRecord{{Offset: 2, Key: "k", Error: "e", Attempts: 1}, {Offset: 3, Key: "k", Retry: true, Skip: true}}, Unpark: []uint64{1}}}},
		{Op: GopLeave, Group: "g", Member: "m"},
		{Op: GopRetry, Group: "g", Partition: 3, Offset: 9},
		{Op: GopSkip, Group: "g", Partition: 3, Offset: 9},
		{Op: GopJoinAt, Group: "g", Member: "m", Session: 5e9, Offsets: []uint64{0, 7, 1 << 40}},
		{Op: GopReset, Group: "g", Offsets: []uint64{3, 0}},
		{Op: GopDelete, Group: "g"},
	} {
		require.NoError(t, op.Check())
		tm, got, err := DecodeGroupEntry(EncodeGroupEntry(77, &op))
		require.NoError(t, err)
		require.Equal(t, int64(77), tm)
		require.Equal(t, op, got)
	}
	// A parked record's flags byte holds retry and skip; other bits are
	// refused. Records stored before skips existed carry 0 or 1.
	rec := AppendParked(nil, []core.ParkedRecord{{Offset: 1, Key: "k"}})
	for flags, want := range map[byte]*core.ParkedRecord{0: {}, 1: {Retry: true}, 2: {Skip: true}, 3: {Retry: true, Skip: true}, 4: nil} {
		rec[len(rec)-1] = flags
		d := Decoder{B: rec}
		ps := d.Parked()
		if want == nil {
			require.Error(t, d.Err, "flags %d", flags)
			continue
		}
		require.NoError(t, d.Err)
		require.Equal(t, []core.ParkedRecord{{Offset: 1, Key: "k", Retry: want.Retry, Skip: want.Skip}}, ps)
	}
}

func TestDecodersRejectTruncation(t *testing.T) {
	r := req(1, "key", 0, 1, 2)
	data := EncodeRequest(EncodeEntryHeader(nil, 1, 1), &r)
	for i := 0; i < len(data); i++ {
		_, err := DecodeEntry(data[:i])
		require.Error(t, err, "prefix of %d bytes", i)
	}
	_, err := DecodeEntry(append(data, 0))
	require.Error(t, err, "trailing byte")
	_, err = DecodeEntry(append([]byte{99}, data[1:]...))
	require.Error(t, err, "unknown command type")
}

// FuzzDecoders feeds arbitrary bytes to the decoders of raft entries,
// requests, group operations and cluster IDs (the state's and the replies' decoders
// have fuzzers of their own in their packages): none may panic, and
// whatever decodes must encode back to the same bytes.
func FuzzDecoders(f *testing.F) {
	r := req(1, "key", 0, 1, 2)
	for _, s := range [][]byte{
		EncodeRequest(EncodeEntryHeader(nil, 5, 1), &r),
		EncodeRequest(nil, &r),
		EncodeGroupEntry(7, &GroupOp{Op: GopCommit, Group: "g", Member: "m", Commits: []core.OffsetCommit{{Partition: 1, Generation: 2, Offset: 3,
			Park: []core.ParkedRecord{{Offset: 2, Key: "k", Error: "e", Attempts: 1}}, Unpark: []uint64{1}}}}),
		EncodeGroupEntry(8, &GroupOp{Op: GopHeartbeat, Group: "g", Member: "m", Release: []core.Partition{1, 2}}),
		EncodeClusterID(uuid.MustParse("0b5e8a3c-52d4-4c39-9d7e-0d6f2b5a7c11")),
		EncodeGroupEntry(9, &GroupOp{Op: GopJoinAt, Group: "g", Member: "m", Session: 1, Offsets: []uint64{4, 5}}),
		EncodeGroupEntry(9, &GroupOp{Op: GopReset, Group: "g", Offsets: []uint64{4, 5}}),
		EncodeRetentionEntry(10, &RetentionOp{Kind: RetPrefix, Key: "order-", MaxAge: 2e9, MaxCount: 3, Before: 4}),
		EncodeRetentionEntry(11, &RetentionOp{Kind: RetPartition, Partition: 2, MaxBytes: 1 << 30}),
		{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := DecodeClusterID(b); err == nil {
			if id == (uuid.UUID{}) || !bytes.Equal(EncodeClusterID(id), b) {
				t.Fatalf("cluster ID entry %x decodes to %s", b, id)
			}
		}
		if e, err := DecodeEntry(b); err == nil {
			again := EncodeEntryHeader(nil, e.Time, len(e.Requests))
			for i := range e.Requests {
				again = EncodeRequest(again, &e.Requests[i])
			}
			if !bytes.Equal(canonical(t, again), canonical(t, b)) {
				t.Fatalf("entry re-encodes differently")
			}
		}
		if r, err := DecodeRequest(b); err == nil {
			if _, err := DecodeRequest(EncodeRequest(nil, &r)); err != nil {
				t.Fatalf("request does not round-trip: %v", err)
			}
		}
		if tm, op, err := DecodeGroupEntry(b); err == nil {
			if _, again, err := DecodeGroupEntry(EncodeGroupEntry(tm, &op)); err != nil || again.Op != op.Op {
				t.Fatalf("group entry does not round-trip: %v", err)
			}
		}
		if tm, op, err := DecodeRetentionEntry(b); err == nil {
			if tm2, again, err := DecodeRetentionEntry(EncodeRetentionEntry(tm, &op)); err != nil || tm2 != tm || again != op {
				t.Fatalf("retention entry does not round-trip: %v", err)
			}
			_ = op.Check(1 << 20) // any verdict, never a panic
		}
	})
}

// canonical decodes and re-encodes an entry so that non-minimal varints in
// fuzz input compare equal to their minimal form.
func canonical(t *testing.T, b []byte) []byte {
	e, err := DecodeEntry(b)
	if err != nil {
		t.Fatalf("canonical: %v", err)
	}
	out := EncodeEntryHeader(nil, e.Time, len(e.Requests))
	for i := range e.Requests {
		out = EncodeRequest(out, &e.Requests[i])
	}
	return out
}

func TestRequestSizeBoundsEncoding(t *testing.T) {
	for _, r := range []Request{
		req(3, "key", -1, 1),
		req(70000, strings.Repeat("k", 300), 1<<40, 1, 2, 3),
		{Partition: 1, Key: "k", Records: []core.NewRecord{{Headers: []core.Header{{Key: "a"}, {Value: make([]byte, 200)}}}}},
	} {
		require.LessOrEqual(t, len(EncodeRequest(nil, &r)), RequestSize(&r))
	}
}

// Check refuses operations that could not apply on any replica: an
// operator's operation naming a member, a join or reset without offsets,
// an unknown operation.
func TestGroupOpCheck(t *testing.T) {
	for _, op := range []GroupOp{
		{Op: GopReset, Group: "g"},
		{Op: GopReset, Group: "g", Member: "m", Offsets: []uint64{1}},
		{Op: GopDelete, Group: "g", Member: "m"},
		{Op: GopSkip, Group: "g", Member: "m"},
		{Op: GopJoinAt, Group: "g", Member: "m", Session: 1},
		{Op: GopJoinAt, Group: "g", Member: "m", Offsets: []uint64{1}},
		{Op: 0, Group: "g", Member: "m"},
		{Op: 99, Group: "g", Member: "m"},
		{Op: GopDelete},
	} {
		require.ErrorIs(t, op.Check(), core.ErrConfig, "%+v", op)
	}
}
