package raftlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Retention limits what reads return of a key: records older than MaxAge,
// all but the newest MaxCount, and those with a key sequence below
// TruncateBefore are hidden (EventStoreDB's $maxAge, $maxCount and $tb).
// A zero field sets no limit; a Retention with every field zero removes
// the rule it is set on.
//
// Rules are replicated: each takes effect at the raft index it is applied
// at, on every replica, and age is judged against the shard's applied time
// (the leader's stamp of the last entry applied), not a replica's clock,
// so replicas that have applied the same index return the same records.
// A leader proposes an entry that only advances the time every
// Config.RetentionTick while a max-age rule exists and nothing else is
// written. Hidden records stay on disk until a scavenge removes them;
// relaxing a rule shows again what was not yet removed.
type Retention struct {
	MaxAge         time.Duration
	MaxCount       uint64
	TruncateBefore uint64
}

// PartitionRetention caps a partition, for data that is not kept per key:
// records older than MaxAge are hidden; MaxBytes is enforced by the
// scavenge, which removes the oldest sealed segments of a partition
// beyond it.
type PartitionRetention struct {
	MaxAge   time.Duration
	MaxBytes int64
}

func (r Retention) op(kind byte) wire.RetentionOp {
	return wire.RetentionOp{Kind: kind, MaxAge: int64(r.MaxAge), MaxCount: r.MaxCount, Before: r.TruncateBefore}
}

// SetKeyRetention sets key's own rule, which overrides any prefix rule
// the key falls under, and returns the position it was applied at.
// Errors: ErrEmptyKey, ErrConfig (a negative age, or the shard holds the
// most key rules it keeps, 65,536), ErrClosed, ErrNoLeader.
func (l *Log) SetKeyRetention(ctx context.Context, key string, r Retention) (Position, error) {
	op := r.op(wire.RetKey)
	op.Key, op.Partition = key, l.Partition(key)
	return l.retention(ctx, l.ShardOf(op.Partition), &op)
}

// SetPrefixRetention sets the rule of every key that starts with prefix
// (a category, such as "order-"; "" is every key) and has no rule of its
// own; of several prefixes a key starts with, the longest applies. The
// rule is set on every shard, one after the other: the positions are one
// per shard, in shard order. Errors as SetKeyRetention (at most 1,024
// prefix rules).
func (l *Log) SetPrefixRetention(ctx context.Context, prefix string, r Retention) ([]Position, error) {
	op := r.op(wire.RetPrefix)
	op.Key = prefix
	var out []Position
	for s := range l.shards {
		pos, err := l.retention(ctx, Shard(s), &op)
		if err != nil {
			return out, err
		}
		out = append(out, pos)
	}
	return out, nil
}

// SetPartitionRetention sets partition p's caps. Errors: ErrUnknownPartition,
// ErrConfig, ErrClosed, ErrNoLeader.
func (l *Log) SetPartitionRetention(ctx context.Context, p Partition, r PartitionRetention) (Position, error) {
	if r.MaxBytes < 0 {
		return Position{}, fmt.Errorf("%w: negative MaxBytes %d", ErrConfig, r.MaxBytes)
	}
	op := wire.RetentionOp{Kind: wire.RetPartition, Partition: p, MaxAge: int64(r.MaxAge), MaxBytes: uint64(r.MaxBytes)}
	return l.retention(ctx, l.ShardOf(p), &op)
}

// TruncatePartition removes every record of partition p below offset
// before (Kafka's DeleteRecords): they are hidden at once on every
// replica and their segments are removed by the next scavenge. The low
// offset only rises, and never past the partition's end.
func (l *Log) TruncatePartition(ctx context.Context, p Partition, before uint64) (Position, error) {
	op := wire.RetentionOp{Kind: wire.RetTruncatePartition, Partition: p, Before: before}
	return l.retention(ctx, l.ShardOf(p), &op)
}

// KeyRetention returns the rule in force for key on this replica (its
// own, or its longest prefix's) and whether there is one.
func (l *Log) KeyRetention(key string) (Retention, bool, error) {
	p := l.Partition(key)
	s, err := l.readable(p)
	if err != nil {
		return Retention{}, false, err
	}
	r, ok := s.engine.KeyRetention(p, key)
	return Retention{MaxAge: time.Duration(r.MaxAge), MaxCount: r.MaxCount, TruncateBefore: r.Before}, ok, nil
}

// PartitionRetentionOf returns partition p's caps and its low offset (the
// first offset not removed by TruncatePartition or a scavenge) on this
// replica.
func (l *Log) PartitionRetentionOf(p Partition) (PartitionRetention, uint64, error) {
	s, err := l.readable(p)
	if err != nil {
		return PartitionRetention{}, 0, err
	}
	r := s.engine.PartitionRetention(p)
	return PartitionRetention{MaxAge: time.Duration(r.MaxAge), MaxBytes: int64(r.MaxBytes)}, r.Low, nil
}

func (l *Log) retention(ctx context.Context, si Shard, op *wire.RetentionOp) (Position, error) {
	if l.isClosed() {
		return Position{}, ErrClosed
	}
	s, err := l.shard(si)
	if err != nil {
		return Position{}, err
	}
	index, err := l.router.Retention(ctx, s.Shard, op)
	if err != nil {
		return Position{}, err
	}
	return Position{Shard: si, Index: index}, nil
}

// tickRetention runs on every node for shard s until Close: while this
// node leads s and a max-age rule exists, it proposes an entry that only
// advances the shard's time whenever RetentionTick passed without one.
func (l *Log) tickRetention(s *shard) {
	select {
	case <-s.raftStarted:
	case <-l.closing:
		return
	}
	l.every(l.cfg.RetentionTick, func() {
		if s.Raft.State() != raft.Leader || !s.engine.HasAgeRetention() {
			return
		}
		if time.Since(time.Unix(0, s.engine.AppliedTime())) < l.cfg.RetentionTick {
			return // entries are being applied: their times advance it
		}
		op := wire.RetentionOp{Kind: wire.RetTick}
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.RetentionTick)
		defer cancel()
		if _, err := l.router.Retention(ctx, s.Shard, &op); err != nil {
			l.logger.Debug("raftlog: advancing the shard's time failed; retried at the next tick", "shard", s.ID, "err", err)
		}
	})
}

// every calls fn every interval until Close.
func (l *Log) every(interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-l.closing:
			return
		}
		fn()
	}
}

// ScavengeResult says what a Scavenge did.
type ScavengeResult struct {
	// Truncated maps each partition whose low offset this call raised to
	// the new low offset.
	Truncated map[Partition]uint64
	// Segments and Bytes count the segment files removed (whole, or their
	// head) and the bytes given back on this node while the call ran,
	// by it or by the flusher.
	Segments int
	Bytes    int64
}

// Scavenge gives disk space back on this node. For each shard it plans,
// on this replica, how far each partition's low offset can rise: past
// every sealed segment whose records are all deleted, truncated or hidden
// by retention, and past the oldest segments beyond the partition's byte
// cap (reading segments at most Config.ScavengeBytesPerSecond); it
// proposes those rises through the log (TruncatePartition), so every
// replica hides the same records at the same index; then it takes a raft
// snapshot (which flushes the state and lets raft compact its log past
// what the snapshot covers), removes the segment files below the low
// offsets, and, if much of the index file is unused, copies it into a new
// one while appends go on (at most Config.IndexCompactBytesPerSecond).
// Other replicas remove their segments after their next flush, or at
// their own Scavenge. The background scavenger runs the same every
// Config.ScavengeInterval on the nodes that lead.
func (l *Log) Scavenge(ctx context.Context) (ScavengeResult, error) {
	res := ScavengeResult{Truncated: map[Partition]uint64{}}
	for _, s := range l.shards {
		if err := l.scavengeShard(ctx, s, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (l *Log) scavengeShard(ctx context.Context, s *shard, res *ScavengeResult) error {
	if l.isClosed() {
		return ErrClosed
	}
	// Plan on a replica that has applied every rule committed so far.
	if err := l.ReadBarrier(ctx, s.ID); err != nil {
		return err
	}
	plan, err := s.engine.ScavengePlan(ctx.Done(), l.cfg.ScavengeBytesPerSecond)
	if err != nil {
		return fmt.Errorf("raftlog: shard %d: scavenge plan: %w", s.ID, err)
	}
	for _, t := range plan {
		pos, err := l.TruncatePartition(ctx, t.Partition, t.Low)
		if err != nil {
			return err
		}
		if err := l.WaitApplied(ctx, pos); err != nil {
			return err
		}
		res.Truncated[t.Partition] = t.Low
	}
	segs0, bytes0 := s.engine.Scavenged()
	defer func() {
		segs, bytes := s.engine.Scavenged()
		res.Segments += segs - segs0
		res.Bytes += bytes - bytes0
	}()
	if err := s.Raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("raftlog: shard %d: snapshot: %w", s.ID, err)
	}
	if _, err = s.engine.DropSegments(); err != nil {
		return err
	}
	// Then the index, if much of its file is unused: copied on this
	// goroutine while applies go on. Its failure or giving way (logged by
	// the engine) leaves the old file whole and loses no space the drop
	// gave back: the next scavenge tries again.
	s.engine.CompactIndex(ctx.Done(), false, l.cfg.IndexCompactBytesPerSecond)
	return nil
}

// runScavenger runs Scavenge's plan and truncation every ScavengeInterval
// for each shard this node leads, until Close.
func (l *Log) runScavenger() {
	l.every(l.cfg.ScavengeInterval, func() {
		for _, s := range l.shards {
			if s.Raft.State() != raft.Leader {
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() { // Close ends a scavenge in progress
				select {
				case <-l.closing:
				case <-ctx.Done():
				}
				cancel()
			}()
			res := ScavengeResult{Truncated: map[Partition]uint64{}}
			if err := l.scavengeShard(ctx, s, &res); err != nil && !errors.Is(err, ErrClosed) && ctx.Err() == nil {
				l.logger.Warn("raftlog: background scavenge failed; retried at the next interval", "shard", s.ID, "err", err)
			}
			cancel()
		}
	})
}
