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
