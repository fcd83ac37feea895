package raftlog

import (
	"testing"
	"time"

	"github.com/esraft/esraft/raftlog/internal/wire"
)

// BenchmarkRecordAppend is what the append path pays per call for its
// counters (stats.go): from one caller at a time (serial), and from
// callers on every core at once, each call contending for the same
// counters (parallel: the worst case; real appends come tens of
// microseconds apart).
func BenchmarkRecordAppend(b *testing.B) {
	req := &wire.Request{Records: []NewRecord{{Value: make([]byte, 200)}}}
	b.Run("serial", func(b *testing.B) {
		s := newLogStats()
		for b.Loop() {
			s.recordAppend(req, time.Now(), nil)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := newLogStats()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.recordAppend(req, time.Now(), nil)
			}
		})
	})
}
