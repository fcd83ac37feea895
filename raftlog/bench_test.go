package raftlog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/rawraftbench"
)

// Benchmarks of 200-byte records from concurrent appenders, each waiting
// for its acknowledgement: batch records per call (one key), reporting
// records/s, p50 and p99 of a call's latency, CPU per record (the whole
// process) and write amplification (bytes written to the device per byte
// acknowledged, per node). BenchmarkRawRaft is the baseline measured in
// the same run: hashicorp/raft with a BoltStore and a trivial FSM, one raft
// Apply per call (batch records in one entry), on the leader.
// BenchmarkDiskSync measures the disk's own latency for a small write and
// fsync, which bounds appenders=1.
//
//	go test -run '^$' -bench 'BenchmarkAppend|BenchmarkRawRaft|BenchmarkDiskSync' -benchtime 3s -count 5 ./raftlog/

var benchShapes = []struct{ nodes, appenders, batch int }{
	{1, 1, 1}, {1, 16, 1}, {1, 64, 1}, {3, 1, 1}, {3, 16, 1}, {3, 64, 1},
	{1, 64, 64}, {3, 64, 64},
}

// name is the sub-benchmark's name; batch=1 keeps the name it had before
// batches were measured.
func benchName(nodes, appenders, batch int) string {
	name := fmt.Sprintf("nodes=%d/appenders=%d", nodes, appenders)
	if batch > 1 {
		name += fmt.Sprintf("/batch=%d", batch)
	}
	return name
}

func BenchmarkAppend(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(benchName(s.nodes, s.appenders, s.batch), func(b *testing.B) {
			b.StopTimer()
			var logs []*Log
			if s.nodes == 1 {
				logs = []*Log{openSingle(b, b.TempDir(), benchConfig)}
			} else {
				logs = leaderFirst(newCluster(b, s.nodes, benchConfig))
			}
			term := logs[0].Status().Shards[0].Term
			defer func() {
				// Elections during the run (a loaded machine starving a
				// node's heartbeats; appends are then forwarded to the new
				// leader) explain outliers; report them.
				b.ReportMetric(float64(logs[0].Status().Shards[0].Term-term), "elections")
			}()
			benchAppends(b, logs, s.appenders, s.batch)
		})
	}
}

func BenchmarkRawRaft(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(benchName(s.nodes, s.appenders, s.batch), func(b *testing.B) {
			b.StopTimer()
			c := rawraftbench.StartCluster(b, s.nodes)
			defer c.Close()
			leader := c.Leader()
			rec := bytes.Repeat(rawraftbench.Record(), s.batch)
			rawraftbench.RunLoad(b, func() error { return leader.Apply(rec, 0).Error() }, s.appenders, rawraftbench.Load{
				Unit: "records/s", PerCall: s.batch, RecordBytes: rawraftbench.RecordSize, Nodes: s.nodes,
			})
		})
	}
}

// BenchmarkDiskSync appends 4 KiB to a file and fsyncs it (as raft-wal
// does for one entry), one at a time, and reports the p50 and p99.
func BenchmarkDiskSync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range lat {
		t0 := time.Now()
		if _, err := f.Write(page); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(rawraftbench.Percentile(lat, 0.50))/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(rawraftbench.Percentile(lat, 0.99))/float64(time.Millisecond), "p99-ms")
}

// benchConfig lets experiments override knobs: RAFTLOG_BENCH_INFLIGHT
// (MaxInflight), RAFTLOG_BENCH_COHORTWAIT (CohortWait),
// RAFTLOG_BENCH_PIPELINE (PipelineBytes), RAFTLOG_BENCH_FLUSH (records
// per in-memory table).
func benchConfig(c *Config) {
	if v := os.Getenv("RAFTLOG_BENCH_INFLIGHT"); v != "" {
		c.MaxInflight, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("RAFTLOG_BENCH_COHORTWAIT"); v != "" {
		c.CohortWait, _ = time.ParseDuration(v)
	}
	if v := os.Getenv("RAFTLOG_BENCH_PIPELINE"); v != "" {
		c.PipelineBytes, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("RAFTLOG_BENCH_FLUSH"); v != "" {
		c.flushRecords, _ = strconv.Atoi(v)
	}
}

// benchAppends times batch 200-byte records per Append to logs[0], keys
// key-0 .. key-4095 in turn, from appenders goroutines. Every node of logs
// is flushed before the bytes written are counted.
func benchAppends(b *testing.B, logs []*Log, appenders, batch int) {
	value := rawraftbench.Record()
	ctx := context.Background()
	var n atomic.Uint64
	l := logs[0]
	rawraftbench.RunLoad(b, func() error {
		i := n.Add(1)
		recs := make([]NewRecord, batch)
		for j := range recs {
			recs[j].Value = value
		}
		_, err := l.Append(ctx, fmt.Sprint("key-", i%4096), recs)
		return err
	}, appenders, rawraftbench.Load{
		Unit: "records/s", PerCall: batch, RecordBytes: len(value), Nodes: len(logs),
		Settle: func() { flushAll(b, logs) },
	})
}

// leaderFirst returns c's nodes, shard 0's leader first.
func leaderFirst(c *testCluster) []*Log {
	var logs []*Log
	for i := range c.nodes {
		logs = append(logs, c.node(i))
	}
	k := c.leader(0)
	logs[0], logs[k] = logs[k], logs[0]
	return logs
}

// flushAll makes every node's state file cover what it applied.
func flushAll(b *testing.B, logs []*Log) {
	for _, l := range logs {
		for _, s := range l.shards {
			if _, err := s.engine.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
