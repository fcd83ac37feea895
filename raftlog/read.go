package raftlog

import (
	"context"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Read returns committed records of partition p from offset from, bounded
// by opt. It reads this node's replica and never waits. Records hidden by
// DeleteKey or TruncateKey are skipped (their offsets are missing from the
// result); an empty result means nothing visible at or after from has been
// applied here yet, so a reader that took NextOffset before the call may
// go on from there.
func (l *Log) Read(ctx context.Context, p Partition, from uint64, opt ReadOptions) ([]Record, error) {
	s, err := l.readable(p)
	if err != nil {
		return nil, err
	}
	maxRecs, maxBytes := readLimits(opt)
	return s.engine.Read(p, from, maxRecs, maxBytes)
}

// ReadKey returns committed records of key in partition p (see Partition)
// from key sequence from, bounded by opt.
func (l *Log) ReadKey(ctx context.Context, p Partition, key string, from uint64, opt ReadOptions) ([]Record, error) {
	s, err := l.readable(p)
	if err != nil {
		return nil, err
	}
	if from == 0 {
		from = 1
	}
	maxRecs, maxBytes := readLimits(opt)
	return s.engine.ReadKey(p, key, from, maxRecs, maxBytes)
}

// KeySeq returns the current sequence of key in partition p on this
// replica: the number of records appended under it.
func (l *Log) KeySeq(ctx context.Context, p Partition, key string) (uint64, error) {
	s, err := l.readable(p)
	if err != nil {
		return 0, err
	}
	return s.engine.KeySeq(p, key)
}

// KeyInfo returns the state of key in partition p on this replica.
func (l *Log) KeyInfo(ctx context.Context, p Partition, key string) (KeyInfo, error) {
	s, err := l.readable(p)
	if err != nil {
		return KeyInfo{}, err
	}
	return s.engine.KeyInfo(p, key)
}

// NextOffset returns the offset the next record of partition p will take,
// as applied on this replica.
func (l *Log) NextOffset(p Partition) (uint64, error) {
	s, err := l.readable(p)
	if err != nil {
		return 0, err
	}
	return s.engine.NextOffset(p), nil
}

func (l *Log) readable(p Partition) (*shard, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	return l.shardOf(p)
}

func readLimits(opt ReadOptions) (int, int) {
	maxRecs, maxBytes := opt.MaxRecords, opt.MaxBytes
	if maxRecs <= 0 {
		maxRecs = 1000
	}
	if maxBytes <= 0 {
		maxBytes = 4 << 20
	}
	return maxRecs, maxBytes
}

// Wait blocks until partition p holds a record at offset (its next offset
// is beyond it) on this replica, or ctx ends. It is woken by the apply path.
func (l *Log) Wait(ctx context.Context, p Partition, offset uint64) error {
	s, err := l.readable(p)
	if err != nil {
		return err
	}
	return l.waitUntil(ctx, s.engine.PartitionSignal(p), func() bool { return s.engine.NextOffset(p) > offset })
}

// WaitApplied blocks until this replica has applied pos, so that reads here
// see every write acknowledged up to it (read-your-writes on any node).
func (l *Log) WaitApplied(ctx context.Context, pos Position) error {
	if l.isClosed() {
		return ErrClosed
	}
	s, err := l.shard(pos.Shard)
	if err != nil {
		return err
	}
	return l.waitUntil(ctx, s.engine.AppliedSignal(), func() bool { return s.engine.Applied() >= pos.Index })
}

// waitUntil blocks until cond holds, re-checking it whenever sig fires.
func (l *Log) waitUntil(ctx context.Context, sig *core.Signal, cond func() bool) error {
	for {
		ch := sig.Wait() // before the check, so no notify is missed
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.closing:
			return ErrClosed
		}
	}
}

// Applied is the position this replica has applied in shard s.
func (l *Log) Applied(s Shard) (Position, error) {
	sh, err := l.shard(s)
	if err != nil {
		return Position{}, err
	}
	return Position{Shard: s, Index: sh.engine.Applied()}, nil
}

// ReadBarrier waits until this node has applied everything shard s's
// leader had applied when the call reached it (after the leader confirmed
// it still leads), so reads on this node then see every write
// acknowledged before ReadBarrier was called, whichever node took it. On
// the leader it costs one round of heartbeats; on a follower one call to
// the leader and the wait for its own apply.
func (l *Log) ReadBarrier(ctx context.Context, s Shard) error {
	sh, err := l.shard(s)
	if err != nil {
		return err
	}
	index, err := l.router.ReadIndex(ctx, sh.Shard)
	if err != nil {
		return err
	}
	return l.WaitApplied(ctx, Position{Shard: s, Index: index})
}
