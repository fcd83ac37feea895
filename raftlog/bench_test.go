package raftlog

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/rawraftbench"
)

// Benchmarks of one 200-byte record per call from concurrent appenders,
// reporting records/s and the p99 latency of a call. BenchmarkRawRaft is
// the baseline measured in the same run: hashicorp/raft with a BoltStore
// and a trivial FSM, one record per raft Apply, on the leader.
//
//	go test -run '^$' -bench 'BenchmarkAppend|BenchmarkRawRaft' -benchtime 3s -count 5 ./raftlog/

var benchShapes = []struct{ nodes, appenders int }{
	{1, 1}, {1, 16}, {1, 64}, {3, 1}, {3, 16}, {3, 64},
}

func BenchmarkAppend(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("nodes=%d/appenders=%d", s.nodes, s.appenders), func(b *testing.B) {
			b.StopTimer()
			var l *Log
			if s.nodes == 1 {
				l = openSingle(b, b.TempDir(), benchConfig)
			} else {
				c := newCluster(b, s.nodes, benchConfig)
				l = c.node(c.leader(0))
			}
			benchAppends(b, l, s.appenders)
		})
	}
}

func BenchmarkRawRaft(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(fmt.Sprintf("nodes=%d/appenders=%d", s.nodes, s.appenders), func(b *testing.B) {
			b.StopTimer()
			c := rawraftbench.StartCluster(b, s.nodes)
			defer c.Close()
			leader := c.Leader()
			rec := rawraftbench.Record()
			rawraftbench.Run(b, func() error { return leader.Apply(rec, 0).Error() }, s.appenders)
		})
	}
}

// benchConfig lets experiments override knobs: RAFTLOG_BENCH_INFLIGHT
// (MaxInflight), RAFTLOG_BENCH_FLUSH (records per in-memory table).
func benchConfig(c *Config) {
	if v := os.Getenv("RAFTLOG_BENCH_INFLIGHT"); v != "" {
		c.MaxInflight, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("RAFTLOG_BENCH_COHORTWAIT"); v != "" {
		c.CohortWait, _ = time.ParseDuration(v)
	}
	if v := os.Getenv("RAFTLOG_BENCH_FLUSH"); v != "" {
		c.flushRecords, _ = strconv.Atoi(v)
	}
}

// benchAppends times one 200-byte record per Append to l, keys key-0 ..
// key-4095 in turn, from appenders goroutines.
func benchAppends(b *testing.B, l *Log, appenders int) {
	value := rawraftbench.Record()
	ctx := context.Background()
	var n atomic.Uint64
	rawraftbench.Run(b, func() error {
		i := n.Add(1)
		_, err := l.Append(ctx, fmt.Sprint("key-", i%4096), []NewRecord{{Value: value}})
		return err
	}, appenders)
}
