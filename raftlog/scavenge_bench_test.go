package raftlog

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkAppendDuringScavenge times 200-byte appends from 16 appenders
// on one node holding 64 MB of expired records, alone ("idle") and while
// a Scavenge weighs and removes those records ("scavenge": it starts with
// the timed appends; scavenge-ms is how long it ran). Compare the p99-ms
// of the two.
//
//	go test -run '^$' -bench BenchmarkAppendDuringScavenge -benchtime 20000x -count 3 ./raftlog/
func BenchmarkAppendDuringScavenge(b *testing.B) {
	for _, mode := range []string{"idle", "scavenge"} {
		b.Run(mode, func(b *testing.B) {
			b.StopTimer()
			l := openSingle(b, b.TempDir(), func(c *Config) {
				benchConfig(c)
				c.Partitions = 2
				c.ScavengeInterval = -1
				c.stateSegmentBytes = 8 << 20
			})
			ctx := context.Background()
			writeExpired(b, l, 64<<20)
			var wg sync.WaitGroup
			var took time.Duration
			if mode == "scavenge" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					if _, err := l.Scavenge(ctx); err != nil {
						b.Error(err)
					}
					took = time.Since(start)
				}()
			}
			benchAppends(b, []*Log{l}, 16, 1)
			wg.Wait()
			if mode == "scavenge" {
				b.ReportMetric(float64(took.Milliseconds()), "scavenge-ms")
			}
		})
	}
}

// writeExpired appends about size bytes of 4 KiB records under keys
// "old-*" and makes them expire at once.
func writeExpired(b *testing.B, l *Log, size int) {
	ctx := context.Background()
	value := make([]byte, 4<<10)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < size/len(value)/8; i += 8 {
				recs := make([]NewRecord, 8)
				for j := range recs {
					recs[j] = NewRecord{ID: uuid.New(), Value: value}
				}
				if _, err := l.Append(ctx, fmt.Sprintf("old-%d", i%64), recs); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := l.SetPrefixRetention(ctx, "old-", Retention{MaxAge: time.Nanosecond}); err != nil {
		b.Fatal(err)
	}
}
