package eventstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// StreamInfo is the state of a stream on this node.
type StreamInfo struct {
	Stream    string
	Partition Partition
	// Version is the version of the stream's last event, 0 if it never had
	// one. Deleted and truncated streams keep their version.
	Version uint64
	// First is the lowest version a read can return (above 1 once the
	// stream was truncated; Version+1 once deleted).
	First   uint64
	Deleted bool
}

// Exists reports whether the stream has events and is not deleted.
func (i StreamInfo) Exists() bool { return i.Version > 0 && !i.Deleted }

// Stream returns the state of stream as this node has applied it.
func (s *Store) Stream(ctx context.Context, stream string) (StreamInfo, error) {
	if err := checkStream(stream); err != nil {
		return StreamInfo{}, err
	}
	p := s.log.Partition(stream)
	k, err := s.log.KeyInfo(ctx, p, stream)
	if err != nil {
		return StreamInfo{}, s.readErr(err)
	}
	return StreamInfo{Stream: stream, Partition: p, Version: k.Seq, First: k.First, Deleted: k.Deleted}, nil
}

// ReadStream returns up to limit events of stream in version order,
// starting at version from (0 or 1: the beginning). A stream with no
// events reads as empty; a deleted one returns ErrStreamDeleted. Reads
// are served by this node's replica: after a write made elsewhere, Sync
// first to read it.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]Event, error) {
	info, err := s.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	if info.Deleted {
		return nil, fmt.Errorf("%w: %q", ErrStreamDeleted, stream)
	}
	return s.readStream(ctx, info.Partition, stream, from, limit)
}

func (s *Store) readStream(ctx context.Context, p Partition, stream string, from uint64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []Event
	for len(out) < limit {
		recs, err := s.log.ReadKey(ctx, p, stream, from, raftlog.ReadOptions{MaxRecords: limit - len(out)})
		if err != nil {
			return nil, s.readErr(err)
		}
		if len(recs) == 0 {
			break
		}
		if out == nil {
			out = make([]Event, 0, min(limit, len(recs)))
		}
		start := len(out)
		for i := range recs {
			ev, err := fromRecord(&recs[i])
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
		if err := s.decrypt(ctx, out[start:]); err != nil {
			return nil, err
		}
		from = recs[len(recs)-1].KeySeq + 1
	}
	return out, nil
}

// ReadStreamBackward returns up to limit events of stream in descending
// version order, starting at version from (0: the last event).
func (s *Store) ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]Event, error) {
	info, err := s.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	if info.Deleted {
		return nil, fmt.Errorf("%w: %q", ErrStreamDeleted, stream)
	}
	if limit <= 0 {
		limit = 1000
	}
	if from == 0 || from > info.Version {
		from = info.Version
	}
	if from < info.First {
		return nil, nil
	}
	start := info.First
	if from-start+1 > uint64(limit) {
		start = from - uint64(limit) + 1
	}
	evs, err := s.readStream(ctx, info.Partition, stream, start, int(from-start+1))
	if err != nil {
		return nil, err
	}
	slices.Reverse(evs)
	return evs, nil
}

// ReadPartition returns up to limit events of partition p from offset
// from, in offset order, and the offset to read from next. Offsets of
// deleted or truncated events are skipped.
func (s *Store) ReadPartition(ctx context.Context, p Partition, from uint64, limit int) ([]Event, uint64, error) {
	if limit <= 0 {
		limit = 1000
	}
	head, err := s.log.NextOffset(p)
	if err != nil {
		return nil, from, s.readErr(err)
	}
	recs, err := s.log.Read(ctx, p, from, raftlog.ReadOptions{MaxRecords: limit})
	if err != nil {
		return nil, from, s.readErr(err)
	}
	if len(recs) == 0 {
		return nil, max(from, head), nil
	}
	out := make([]Event, len(recs))
	for i := range recs {
		if out[i], err = fromRecord(&recs[i]); err != nil {
			return nil, from, err
		}
	}
	if err := s.decrypt(ctx, out); err != nil {
		return nil, from, err
	}
	return out, recs[len(recs)-1].Offset + 1, nil
}

// OffsetAt returns the offset of the first event of partition p stamped
// at or after t on this node, or the partition's head if there is none
// yet: ReadPartition from it reads the partition from time t. Event times
// never decrease along a partition, so this is a binary search (O(log n)
// reads of one event), with no index.
func (s *Store) OffsetAt(ctx context.Context, p Partition, t time.Time) (uint64, error) {
	if p < 0 || int(p) >= s.Partitions() {
		return 0, fmt.Errorf("%w: %d", ErrUnknownPartition, p)
	}
	off, err := s.log.OffsetAtTime(ctx, p, t)
	return off, s.readErr(err)
}

// Head returns the offset the next event of partition p will take on this
// node: a subscription "from now" starts there.
func (s *Store) Head(p Partition) (uint64, error) {
	n, err := s.log.NextOffset(p)
	return n, s.readErr(err)
}
