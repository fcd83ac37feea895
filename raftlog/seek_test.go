package raftlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// OffsetAtTime finds, for any time, the first offset of the partition
// stamped at or after it: before every record the first offset, after
// every record the next one, on a record's own time the first record of
// that time; records a truncation hid count as the next one that is not.
func TestOffsetAtTimeOnAPartition(t *testing.T) {
	l := openSingle(t, t.TempDir(), nil)
	ctx := context.Background()
	const p = Partition(2)
	for i := range 40 {
		recs := []NewRecord{{Value: []byte(fmt.Sprint(i))}}
		if i%4 == 0 {
			recs = append(recs, NewRecord{Value: []byte("same entry")}) // two records, one time
		}
		_, err := l.Append(ctx, fmt.Sprint("k", i%3), recs, ToPartition(p))
		require.NoError(t, err)
		if i%10 == 9 {
			time.Sleep(2 * time.Millisecond) // so that some times differ by more than an entry's
		}
	}
	all := readAll(t, l, p)
	require.Len(t, all, 50)
	first := func(at time.Time) uint64 { // what OffsetAtTime must answer, by a scan
		for _, r := range all {
			if !r.Time.Before(at) {
				return r.Offset
			}
		}
		return all[len(all)-1].Offset + 1
	}
	// A read from the offset found starts at the first visible record of
	// that time or later (hidden ones below it read as the next).
	visibleFrom := func(off uint64) uint64 {
		for _, r := range all {
			if r.Offset >= off {
				return r.Offset
			}
		}
		return all[len(all)-1].Offset + 1
	}
	check := func(when string) {
		for _, r := range all {
			for _, at := range []time.Time{r.Time, r.Time.Add(-time.Nanosecond), r.Time.Add(time.Nanosecond)} {
				got, err := l.OffsetAtTime(ctx, p, at)
				require.NoError(t, err)
				require.Equal(t, first(at), visibleFrom(got), "%s: at %s, found %d", when, at.Format(time.RFC3339Nano), got)
			}
		}
		got, err := l.OffsetAtTime(ctx, p, all[0].Time.Add(-time.Hour))
		require.NoError(t, err)
		require.Equal(t, all[0].Offset, visibleFrom(got), "%s: before every record", when)
		got, err = l.OffsetAtTime(ctx, p, all[len(all)-1].Time.Add(time.Hour))
		require.NoError(t, err)
		require.Equal(t, uint64(50), got, "%s: after every record, the next offset", when)
		empty, err := l.OffsetAtTime(ctx, 5, time.Now())
		require.NoError(t, err)
		require.Zero(t, empty, "%s: an empty partition", when)
	}
	check("appended")
	for _, s := range l.shards {
		_, err := s.engine.Flush()
		require.NoError(t, err)
	}
	check("flushed")

	// Hide k0's records below its 8th: a time that falls on one of them
	// finds the next visible record.
	_, err := l.TruncateKey(ctx, "k0", 8, ToPartition(p))
	require.NoError(t, err)
	all = readAll(t, l, p)
	require.Less(t, len(all), 50)
	check("truncated")
}
