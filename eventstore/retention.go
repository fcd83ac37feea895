package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// StreamRetention limits what reads return of a stream, as EventStoreDB's
// stream metadata does: events older than MaxAge ($maxAge), all but the
// newest MaxCount ($maxCount), and those with a version below
// TruncateBefore ($tb) are hidden. A zero field sets no limit; a
// StreamRetention with every field zero removes the setting.
//
// Settings are replicated: each takes effect at one position of the log,
// on every node, and age is judged against the log's applied time (the
// leader's stamp of the last entry applied), so nodes that have applied
// the same position return the same events. Hidden events stay on disk
// until a scavenge removes them; relaxing a setting shows again what was
// not yet removed.
type StreamRetention struct {
	MaxAge         time.Duration
	MaxCount       uint64
	TruncateBefore uint64
}

// PartitionRetention caps a partition: events older than MaxAge are
// hidden; MaxBytes is enforced by the scavenge, which removes the
// partition's oldest sealed segments beyond it.
type PartitionRetention = raftlog.PartitionRetention

// retentionLog is what a Log offers for retention settings: the embedded
// *raftlog.Log does; a thin client does not yet.
type retentionLog interface {
	SetKeyRetention(ctx context.Context, key string, r raftlog.Retention) (raftlog.Position, error)
	SetPrefixRetention(ctx context.Context, prefix string, r raftlog.Retention) ([]raftlog.Position, error)
	SetPartitionRetention(ctx context.Context, p raftlog.Partition, r raftlog.PartitionRetention) (raftlog.Position, error)
	KeyRetention(key string) (raftlog.Retention, bool, error)
}

var _ retentionLog = (*raftlog.Log)(nil)

func (s *Store) retentionLog() (retentionLog, error) {
	l, ok := s.log.(retentionLog)
	if !ok {
		return nil, fmt.Errorf("%w: retention settings through %T", ErrUnsupported, s.log)
	}
	return l, nil
}

func (r StreamRetention) log() raftlog.Retention {
	return raftlog.Retention{MaxAge: r.MaxAge, MaxCount: r.MaxCount, TruncateBefore: r.TruncateBefore}
}

// SetStreamRetention sets stream's own retention, which overrides its
// category's. This node reads by it once the call returns.
func (s *Store) SetStreamRetention(ctx context.Context, stream string, r StreamRetention) error {
	if err := checkStream(stream); err != nil {
		return err
	}
	l, err := s.retentionLog()
	if err != nil {
		return err
	}
	pos, err := l.SetKeyRetention(ctx, stream, r.log())
	if err != nil {
		return s.retentionErr(err)
	}
	s.readYourWrite(ctx, pos)
	return nil
}

// SetCategoryRetention sets the retention of every stream of category
// (the streams named category + "-" + anything; see InCategory) that has
// no setting of its own; of nested categories ("order" and
// "order-line"), the longer name applies.
func (s *Store) SetCategoryRetention(ctx context.Context, category string, r StreamRetention) error {
	if err := checkStream(category); err != nil {
		return err
	}
	l, err := s.retentionLog()
	if err != nil {
		return err
	}
	positions, err := l.SetPrefixRetention(ctx, category+"-", r.log())
	if err != nil {
		return s.retentionErr(err)
	}
	for _, pos := range positions {
		s.readYourWrite(ctx, pos)
	}
	return nil
}

// SetPartitionRetention sets partition p's caps.
func (s *Store) SetPartitionRetention(ctx context.Context, p Partition, r PartitionRetention) error {
	l, err := s.retentionLog()
	if err != nil {
		return err
	}
	pos, err := l.SetPartitionRetention(ctx, p, r)
	if err != nil {
		return s.retentionErr(err)
	}
	s.readYourWrite(ctx, pos)
	return nil
}

// StreamRetentionOf returns the retention in force for stream on this
// node (its own, or its category's) and whether there is one.
func (s *Store) StreamRetentionOf(stream string) (StreamRetention, bool, error) {
	l, err := s.retentionLog()
	if err != nil {
		return StreamRetention{}, false, err
	}
	r, ok, err := l.KeyRetention(stream)
	if err != nil {
		return StreamRetention{}, false, s.readErr(err)
	}
	return StreamRetention{MaxAge: r.MaxAge, MaxCount: r.MaxCount, TruncateBefore: r.TruncateBefore}, ok, nil
}

func (s *Store) retentionErr(err error) error {
	if errors.Is(err, raftlog.ErrConfig) {
		return fmt.Errorf("%w: %w", ErrInvalidRetention, err)
	}
	return s.translate(err, "", Any, 0)
}
