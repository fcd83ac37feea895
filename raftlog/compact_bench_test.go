package raftlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/rawraftbench"
	"github.com/google/uuid"
)

// BenchmarkAppendDuringIndexCompaction times 200-byte appends from 16
// appenders on one node whose index holds many record IDs (2,000,000 by
// default, RAFTLOG_BENCH_INDEX_RECORDS), for a fixed time (10 s,
// RAFTLOG_BENCH_SECONDS) whatever b.N: alone ("idle"), and while the index
// is compacted back to back ("compact": every append overlaps a copy or a
// swap). The index is built once, by appends of 64 small records, and both
// modes run on it, "compact" first (so that it copies the index built, not
// that and what "idle" appended). RAFTLOG_BENCH_COMPACT_RATE is the copy's
// bound in bytes per second (8 MiB/s, Config.IndexCompactBytesPerSecond's
// default). Compare p50-ms and p99-ms; compactions, gave-up,
// compaction-ms (their mean duration), max-held-ms (the longest the
// flusher waited for a swap) and index-MB say what the compactions did.
//
//	go test -run '^$' -bench BenchmarkAppendDuringIndexCompaction -benchtime 1x ./raftlog/
func BenchmarkAppendDuringIndexCompaction(b *testing.B) {
	if testing.Short() {
		b.Skip("builds an index of hundreds of MB")
	}
	records := envInt(b, "RAFTLOG_BENCH_INDEX_RECORDS", 2_000_000)
	run := time.Duration(envInt(b, "RAFTLOG_BENCH_SECONDS", 10)) * time.Second
	rate := int64(envInt(b, "RAFTLOG_BENCH_COMPACT_RATE", 8<<20))
	dir := b.TempDir()
	l := openSingle(b, dir, func(c *Config) {
		benchConfig(c)
		c.Partitions = 2
		c.ScavengeInterval = -1
	})
	start := time.Now()
	buildIndex(b, l, records)
	flushAll(b, []*Log{l})
	st, err := os.Stat(filepath.Join(dir, "g0", "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("index of %d records built in %s: %d bytes", records, time.Since(start).Round(time.Millisecond), st.Size())
	s := l.shards[0]
	for _, mode := range []string{"compact", "idle"} {
		b.Run(mode, func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var done, gaveUp, took, held, size atomic.Int64
			if mode == "compact" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						res, err := s.engine.CompactIndex(stop, true, rate)
						select {
						case <-stop: // the run ended
							return
						default:
						}
						if err != nil {
							if gaveUp.Add(1) == 1 {
								b.Logf("a compaction gave up after %s: %v", res.Took.Round(time.Millisecond), err)
							}
							continue
						}
						done.Add(1)
						took.Add(int64(res.Took))
						if int64(res.Held) > held.Load() {
							held.Store(int64(res.Held))
						}
						size.Store(res.After)
					}
				}()
			}
			lat, n := appendFor(b, l, 16, run)
			close(stop)
			wg.Wait()
			flushAll(b, []*Log{l})
			b.ReportMetric(float64(n)/run.Seconds(), "records/s")
			b.ReportMetric(float64(rawraftbench.Percentile(lat, 0.50))/float64(time.Millisecond), "p50-ms")
			b.ReportMetric(float64(rawraftbench.Percentile(lat, 0.99))/float64(time.Millisecond), "p99-ms")
			b.ReportMetric(float64(rawraftbench.Percentile(lat, 1))/float64(time.Millisecond), "max-ms")
			if mode == "compact" {
				b.ReportMetric(float64(done.Load()), "compactions")
				b.ReportMetric(float64(gaveUp.Load()), "gave-up")
				if n := done.Load(); n > 0 {
					b.ReportMetric(float64(time.Duration(took.Load()/n).Milliseconds()), "compaction-ms")
					b.ReportMetric(float64(size.Load())/1e6, "index-MB")
					b.ReportMetric(float64(time.Duration(held.Load()).Microseconds())/1000, "max-held-ms")
				} else {
					b.Error("no compaction finished during the run")
				}
			}
		})
	}
}

// appendFor appends one 200-byte record per Append, keys key-0 ..
// key-4095 in turn, from appenders goroutines for d, and returns every
// append's latency and how many there were.
func appendFor(b *testing.B, l *Log, appenders int, d time.Duration) ([]time.Duration, int) {
	value := rawraftbench.Record()
	ctx := context.Background()
	var n atomic.Uint64
	lats := make([][]time.Duration, appenders)
	var wg sync.WaitGroup
	b.ResetTimer()
	deadline := time.Now().Add(d)
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := n.Add(1)
				t0 := time.Now()
				_, err := l.Append(ctx, fmt.Sprint("key-", i%4096), []NewRecord{{Value: value}})
				lats[g] = append(lats[g], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return all, len(all)
}

// buildIndex appends n records of 16 bytes, 64 per Append, from 16
// appenders, under 4,096 keys: each leaves an ID and a key position in
// the index.
func buildIndex(b *testing.B, l *Log, n int) {
	ctx := context.Background()
	value := make([]byte, 16)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Bool
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := next.Add(64) - 64
				if i >= int64(n) {
					return
				}
				// IDs of the caller's own, as idempotent callers give: each
				// is its own run, so the index holds an entry per record (IDs
				// made by Append would be one entry per append).
				recs := make([]NewRecord, 64)
				for j := range recs {
					recs[j].ID = uuid.Must(uuid.NewV7())
					recs[j].Value = value
				}
				if _, err := l.Append(ctx, fmt.Sprint("big-", i/64%4096), recs); err != nil {
					b.Error(err)
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
}

// envInt is the integer in environment variable name, def if it is unset.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}
