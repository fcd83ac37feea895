package kafka

import (
	"context"
	"time"

	"github.com/esraft/esraft/eventstore"
)

// retentionInterval is how often the coordinating node drops records past
// their topic's retention.ms.
const retentionInterval = 30 * time.Second

// runRetention enforces retention until ctx ends, on the node that
// coordinates groups (one node does it; a truncation by another is
// harmless, since truncation never moves back).
func (s *Server) runRetention(ctx context.Context) {
	t := time.NewTicker(retentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, self := s.coordinator(ctx); self {
				if err := s.enforceRetention(ctx, time.Now()); err != nil && ctx.Err() == nil {
					s.log.Warn("kafka: retention failed", "err", err)
				}
			}
		}
	}
}

// enforceRetention truncates every partition of every topic with a
// retention below its first record whose log time is within retention of
// now: the log start offset moves there and the records before it are
// erased from every node (TruncateStream).
func (s *Server) enforceRetention(ctx context.Context, now time.Time) error {
	all, err := s.topics.all(ctx)
	if err != nil {
		return err
	}
	for _, tc := range all {
		if tc.RetentionMs <= 0 {
			continue
		}
		cutoff := now.Add(-time.Duration(tc.RetentionMs) * time.Millisecond).UnixMilli()
		for p := int32(0); p < tc.Partitions; p++ {
			st, err := s.partitionInfo(ctx, tc.Name, p)
			if err != nil {
				return err
			}
			keep, _, err := s.offsetForTime(ctx, tc.Name, p, st, cutoff)
			if err != nil {
				return err
			}
			if keep <= st.logStart {
				continue
			}
			// Offset o is version o+1: versions below keep+1 go.
			if _, err := s.store.TruncateStream(ctx, topicStream(tc.Name, p), uint64(keep)+1, eventstore.Any); err != nil {
				return err
			}
		}
	}
	return nil
}
