package raftlog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCodecRoundTrip(t *testing.T) {
	r := req(7, "stream-1", 3, 1, 2, 3)
	b := encodeRequest(nil, &r)
	got, err := decodeRequest(b)
	require.NoError(t, err)
	require.Equal(t, r, got)

	data := encodeEntryHeader(nil, 42, 2)
	r2 := req(0, "k", -1, 9)
	data = encodeRequest(encodeRequest(data, &r), &r2)
	e, err := decodeEntry(data)
	require.NoError(t, err)
	require.Equal(t, entry{Time: 42, Requests: []appendRequest{r, r2}}, e)

	rec := r.Records[1]
	stored := encodeRecord(nil, "stream-1", 5, &rec, 1234)
	back, err := decodeRecord(stored, 7, 99)
	require.NoError(t, err)
	require.Equal(t, Record{Partition: 7, Offset: 99, Key: "stream-1", KeySeq: 5, ID: rec.ID,
		Time: time.Unix(0, 1234).UTC(), Headers: rec.Headers, Value: rec.Value}, back)

	for _, res := range []AppendResult{
		{Partition: 3, FirstOffset: 10, FirstKeySeq: 2, Count: 4, Time: time.Unix(0, 77).UTC(), Position: Position{1, 900}, Duplicate: true},
	} {
		got, err := decodeAppendReply(encodeAppendReply(res, nil))
		require.NoError(t, err)
		require.Equal(t, res, got)
	}
	for _, want := range []KeySeqError{
		{Partition: 1, Key: "x", Expected: 2, Actual: 5},
		{Partition: 2, Key: "y", Condition: CondExists, Actual: 3, Deleted: true},
		{Partition: 3, Key: "z", Condition: CondAbsent, Actual: 4},
	} {
		_, err = decodeAppendReply(encodeAppendReply(AppendResult{}, &want))
		var kse *KeySeqError
		require.ErrorAs(t, err, &kse)
		require.Equal(t, want, *kse)
	}
	_, err = decodeAppendReply(encodeAppendReply(AppendResult{}, ErrKeyDeleted))
	require.ErrorIs(t, err, ErrKeyDeleted)

	for _, op := range []appendRequest{keyOp(2, "k", 4, 0), keyOp(3, "k", -1, 17), flagged(req(1, "k", -1, 5), reqAbsent|reqRecreate)} {
		got, err := decodeRequest(encodeRequest(nil, &op))
		require.NoError(t, err)
		require.Equal(t, op, got)
	}
	bad := req(1, "k", -1, 5)
	bad.Flags = 1 << 10
	_, err = decodeRequest(encodeRequest(nil, &bad))
	require.Error(t, err, "unknown request flags")

	for _, m := range []keyMeta{{floor: 1}, {floor: 7, erased: 3, deleted: true}} {
		got, err := decodeKeyMeta(encodeKeyMeta(nil, m))
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
}

func TestDecodersRejectTruncation(t *testing.T) {
	r := req(1, "key", 0, 1, 2)
	data := encodeRequest(encodeEntryHeader(nil, 1, 1), &r)
	for i := 0; i < len(data); i++ {
		_, err := decodeEntry(data[:i])
		require.Error(t, err, "prefix of %d bytes", i)
	}
	_, err := decodeEntry(append(data, 0))
	require.Error(t, err, "trailing byte")
	_, err = decodeEntry(append([]byte{99}, data[1:]...))
	require.Error(t, err, "unknown command type")
}

// Seeds for the fuzzers: valid encodings of each kind.
func fuzzSeeds() [][]byte {
	r := req(1, "key", 0, 1, 2)
	entryData := encodeRequest(encodeEntryHeader(nil, 5, 1), &r)
	rec := r.Records[0]
	return [][]byte{
		entryData,
		encodeRequest(nil, &r),
		encodeRecord(nil, "key", 1, &rec, 9),
		encodeIDEntry(nil, idEntry{Partition: 1, Offset: 2, KeySeq: 3, Time: 4}),
		encodeKeyMeta(nil, keyMeta{floor: 3, erased: 2, deleted: true}),
		encodeGroupEntry(7, &groupOp{Op: gopCommit, Group: "g", Member: "m", Commits: []OffsetCommit{{Partition: 1, Generation: 2, Offset: 3,
			Park: []ParkedRecord{{Offset: 2, Key: "k", Error: "e", Attempts: 1}}, Unpark: []uint64{1}}}}),
		encodeGroupEntry(8, &groupOp{Op: gopHeartbeat, Group: "g", Member: "m", Release: []int{1, 2}}),
		encodeGroupReply(GroupState{Group: "g", Generation: 2, Partitions: []PartitionAssignment{{Owner: "m"}}}, nil),
		encodeCGroup(nil, &cgroup{generation: 1, members: map[string]*cmember{"m": {session: 5}}, parts: make([]PartitionAssignment, 2)}),
		encodeAppendReply(AppendResult{Count: 1}, nil),
		snapshotHeader{kind: snapshotFull, index: 3}.encode(),
		{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
}

// FuzzDecoders feeds arbitrary bytes to every decoder of entries, requests,
// stored records, index values, forwarded replies and snapshot headers:
// none may panic, and whatever decodes must encode back to the same bytes.
func FuzzDecoders(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := decodeEntry(b); err == nil {
			again := encodeEntryHeader(nil, e.Time, len(e.Requests))
			for i := range e.Requests {
				again = encodeRequest(again, &e.Requests[i])
			}
			if !bytes.Equal(canonical(t, again), canonical(t, b)) {
				t.Fatalf("entry re-encodes differently")
			}
		}
		if r, err := decodeRequest(b); err == nil {
			if _, err := decodeRequest(encodeRequest(nil, &r)); err != nil {
				t.Fatalf("request does not round-trip: %v", err)
			}
		}
		if rec, err := decodeRecord(b, 0, 0); err == nil {
			nr := NewRecord{ID: rec.ID, Headers: rec.Headers, Value: rec.Value}
			if _, err := decodeRecord(encodeRecord(nil, rec.Key, rec.KeySeq, &nr, rec.Time.UnixNano()), 0, 0); err != nil {
				t.Fatalf("record does not round-trip: %v", err)
			}
		}
		decodeIDEntry(b)
		decodeKeyMeta(b)
		if tm, op, err := decodeGroupEntry(b); err == nil {
			if _, again, err := decodeGroupEntry(encodeGroupEntry(tm, &op)); err != nil || again.Op != op.Op {
				t.Fatalf("group entry does not round-trip: %v", err)
			}
		}
		decodeGroupReply(b)
		decodeCGroup(b)
		storedKeySeq(b)
		decodeAppendReply(b)
		if len(b) == snapshotHdrLen {
			decodeSnapshotHeader(b)
		}
	})
}

// canonical decodes and re-encodes an entry so that non-minimal varints in
// fuzz input compare equal to their minimal form.
func canonical(t *testing.T, b []byte) []byte {
	e, err := decodeEntry(b)
	if err != nil {
		t.Fatalf("canonical: %v", err)
	}
	out := encodeEntryHeader(nil, e.Time, len(e.Requests))
	for i := range e.Requests {
		out = encodeRequest(out, &e.Requests[i])
	}
	return out
}

func TestRequestSizeBoundsEncoding(t *testing.T) {
	for _, r := range []appendRequest{
		req(3, "key", -1, 1),
		req(70000, strings.Repeat("k", 300), 1<<40, 1, 2, 3),
		{Partition: 1, Key: "k", Records: []NewRecord{{Headers: []Header{{Key: "a"}, {Value: make([]byte, 200)}}}}},
	} {
		require.LessOrEqual(t, len(encodeRequest(nil, &r)), requestSize(&r))
	}
}
