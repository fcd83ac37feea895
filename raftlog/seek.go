package raftlog

import (
	"context"
	"time"
)

// OffsetAtTime returns the first offset of partition p whose record is
// stamped at or after t, as this replica holds it, or the partition's
// next offset if none is: where a read or a subscription "from t"
// starts. Record times never decrease along a partition (each shard's
// apply stamps max(leader's time, previous time)), so this is a binary
// search: O(log n) reads of one record, no time index.
func (l *Log) OffsetAtTime(ctx context.Context, p Partition, t time.Time) (uint64, error) {
	return seekTime(ctx, l, p, t)
}

// OffsetAtTime returns the first offset of partition p stamped at or after
// t on the node in use, as Log.OffsetAtTime (one call per step of the
// search).
func (r *Remote) OffsetAtTime(ctx context.Context, p Partition, t time.Time) (uint64, error) {
	return seekTime(ctx, r, p, t)
}

func seekTime(ctx context.Context, r startReader, p Partition, t time.Time) (uint64, error) {
	head, err := r.NextOffset(p)
	if err != nil {
		return 0, err
	}
	return offsetAt(ctx, r, p, head, t)
}
