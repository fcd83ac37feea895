package admin_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/rawraftbench"
)

// BenchmarkAppendMetrics is raftlog's BenchmarkAppend shape (one node,
// 64 appenders, one 200-byte record per Append) with the metrics
// collector registered and scraped every 100 ms (metrics=on; a
// Prometheus server scrapes every 15 s or so) and without (metrics=off).
// The append path's counters are atomics that run either way; this
// measures what collecting costs while appends run. Run the two as pairs
// (BENCHMARKS.md).
func BenchmarkAppendMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "metrics=off"
		if on {
			name = "metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			store, err := eventstore.Open(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			if on {
				reg := prometheus.NewRegistry()
				reg.MustRegister(admin.NewCollector(store, nil))
				stop := make(chan struct{})
				done := make(chan struct{})
				var scrapes atomic.Int64
				go func() {
					defer close(done)
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
							if _, err := reg.Gather(); err != nil {
								b.Error(err)
							}
							scrapes.Add(1)
						}
					}
				}()
				defer func() {
					close(stop)
					<-done
					b.ReportMetric(float64(scrapes.Load()), "scrapes")
				}()
			}
			l := store.Log()
			value := rawraftbench.Record()
			var n atomic.Uint64
			rawraftbench.Run(b, func() error {
				i := n.Add(1)
				_, err := l.Append(context.Background(), fmt.Sprint("key-", i%4096), []raftlog.NewRecord{{Value: value}})
				return err
			}, 64)
		})
	}
}
