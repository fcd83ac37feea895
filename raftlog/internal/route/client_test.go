package route

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

func TestRecordsRoundTrip(t *testing.T) {
	recs := []core.Record{
		{Partition: 3, Offset: 7, Key: "k", KeySeq: 1, ID: uuid.New(), Time: time.Unix(0, 12345).UTC(),
			Headers: []core.Header{{Key: "$t", Value: []byte("T")}}, Value: []byte("v")},
		{Partition: 3, Offset: 9, Key: "other", KeySeq: 4, ID: uuid.New(), Time: time.Unix(5, 0).UTC()},
	}
	d := &wire.Decoder{B: AppendRecords(nil, recs)}
	got := DecodeRecords(d, 3)
	require.NoError(t, d.Finish())
	require.Equal(t, recs, got)
	d = &wire.Decoder{B: AppendRecords(nil, nil)}
	require.Empty(t, DecodeRecords(d, 0))
	require.NoError(t, d.Finish())
}

// FuzzDecodeRecords: whatever a node answers, the client's decoder
// returns records or an error, never panics, and what it accepts
// survives its own encoding unchanged.
func FuzzDecodeRecords(f *testing.F) {
	f.Add(AppendRecords(nil, []core.Record{{Offset: 1, Key: "k", KeySeq: 1, Value: []byte("x")}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &wire.Decoder{B: b}
		recs := DecodeRecords(d, 0)
		if d.Finish() != nil {
			return
		}
		d = &wire.Decoder{B: AppendRecords(nil, recs)}
		again := DecodeRecords(d, 0)
		require.NoError(t, d.Finish())
		require.Equal(t, recs, again)
	})
}

// FuzzDecodeListedKeys: whatever a node answers to a key listing, the
// client's decoder returns keys within its bounds (count, partitions) or
// an error, never panics, and what it accepts survives its own encoding.
func FuzzDecodeListedKeys(f *testing.F) {
	f.Add(AppendListedKeys(nil, []core.ListedKey{{Key: "k", Partition: 1, Seq: 3}, {Key: "j", Deleted: true}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{1, 1, 'k', 9, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &wire.Decoder{B: b}
		keys := DecodeListedKeys(d, 3, 2)
		if d.Finish() != nil {
			return
		}
		require.LessOrEqual(t, len(keys), 3)
		for _, k := range keys {
			require.Less(t, int(k.Partition), 2)
		}
		d = &wire.Decoder{B: AppendListedKeys(nil, keys)}
		again := DecodeListedKeys(d, 3, 2)
		require.NoError(t, d.Finish())
		require.Equal(t, keys, again)
	})
}

// FuzzDecodeAppends: a call of several appends (or its answer) decodes
// to at most MaxClientAppends requests or fails, never panics, and what
// decodes survives its own encoding.
func FuzzDecodeAppends(f *testing.F) {
	f.Add(AppendAppends(nil, [][]byte{{1, 2}, {3}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &wire.Decoder{B: b}
		encs := DecodeAppends(d)
		if d.Finish() != nil {
			return
		}
		require.NotEmpty(t, encs)
		require.LessOrEqual(t, len(encs), MaxClientAppends)
		d = &wire.Decoder{B: AppendReplies(nil, encs)}
		again := DecodeReplies(d, len(encs))
		require.NoError(t, d.Finish())
		require.Equal(t, encs, again)
	})
}
