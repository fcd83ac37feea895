package state

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

func TestStoredFormatsRoundTrip(t *testing.T) {
	r := req(7, "stream-1", 3, 1, 2, 3)
	rec := r.Records[1]
	stored := encodeRecord(nil, "stream-1", 5, &rec, nil, 1234)
	back, err := decodeRecord(stored, 7, 99)
	require.NoError(t, err)
	require.Equal(t, core.Record{Partition: 7, Offset: 99, Key: "stream-1", KeySeq: 5, ID: rec.ID,
		Time: time.Unix(0, 1234).UTC(), Headers: rec.Headers, Value: rec.Value}, back)

	for _, m := range []keyMeta{{floor: 1}, {floor: 7, erased: 3, deleted: true}} {
		got, err := decodeKeyMeta(encodeKeyMeta(nil, m))
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	for _, e := range []IDEntry{{Partition: 1, Offset: 2, KeySeq: 3, Time: 4, Count: 1}, {Partition: 1, Offset: 2, KeySeq: 3, Time: 4, Count: maxIDRun}} {
		b := encodeIDEntry(nil, e)
		got, err := decodeIDEntry(b)
		require.NoError(t, err)
		require.Equal(t, e, got)
		if e.Count == 1 {
			require.Len(t, b, 4, "a run of one is stored as an entry was before runs")
		}
	}
	for _, count := range []uint64{0, maxIDRun + 1} { // a stored run of 1 or beyond the limit
		_, err := decodeIDEntry(binary.AppendUvarint(encodeIDEntry(nil, IDEntry{Time: 4}), count))
		require.Error(t, err, "count-1 = %d", count)
	}
}

// FuzzStateDecoders feeds arbitrary bytes to every decoder of the state
// file (stored records, index values, key metadata, consumer groups) and of
// snapshot headers: none may panic, and a record that decodes must encode
// back to one that decodes.
func FuzzStateDecoders(f *testing.F) {
	r := req(1, "key", 0, 1, 2)
	rec := r.Records[0]
	g := cgroup.FromState(&core.GroupState{Generation: 1, Members: []core.GroupMember{{ID: "m", SessionTimeout: 5}}, Partitions: make([]core.PartitionAssignment, 2)})
	for _, s := range [][]byte{
		encodeRecord(nil, "key", 1, &rec, nil, 9),
		encodeIDEntry(nil, IDEntry{Partition: 1, Offset: 2, KeySeq: 3, Time: 4}),
		encodeKeyMeta(nil, keyMeta{floor: 3, erased: 2, deleted: true}),
		cgroup.Encode(nil, g),
		snapshotHeader{kind: snapshotFull, index: 3}.encode(),
		wire.EncodeRequest(nil, &r),
		{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if rec, err := decodeRecord(b, 0, 0); err == nil {
			nr := core.NewRecord{ID: rec.ID, Headers: rec.Headers, Value: rec.Value}
			if _, err := decodeRecord(encodeRecord(nil, rec.Key, rec.KeySeq, &nr, nil, rec.Time.UnixNano()), 0, 0); err != nil {
				t.Fatalf("record does not round-trip: %v", err)
			}
		}
		decodeIDEntry(b)
		decodeKeyMeta(b)
		cgroup.Decode(b)
		storedKeySeq(b)
		if len(b) == snapshotHdrLen {
			decodeSnapshotHeader(b)
		}
	})
}
