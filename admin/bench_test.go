package admin_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

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

// TestMetricsOverheadInterleaved measures the same as
// BenchmarkAppendMetrics on a machine whose load drifts: one store, 64
// appenders running throughout, and slices of ESRAFT_METRICS_SLICE
// (default 1 s) alternating between gathering the collector every 100 ms
// and not, ESRAFT_METRICS_PAIRS pairs (default 10). Drift then hits both
// modes alike. It runs only with ESRAFT_METRICS_PAIRS set (BENCHMARKS.md).
// ESRAFT_METRICS_AA=1 never gathers: both modes are the same, and the
// spread of the ratios is the machine's noise floor.
func TestMetricsOverheadInterleaved(t *testing.T) {
	pairs, _ := strconv.Atoi(os.Getenv("ESRAFT_METRICS_PAIRS"))
	if pairs <= 0 {
		t.Skip("set ESRAFT_METRICS_PAIRS to run this measurement")
	}
	slice := time.Second
	if v := os.Getenv("ESRAFT_METRICS_SLICE"); v != "" {
		var err error
		slice, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	store, err := eventstore.Open(context.Background(), t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(admin.NewCollector(store, nil))

	l := store.Log()
	value := rawraftbench.Record()
	var acked, seq atomic.Uint64
	var gathering atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := seq.Add(1)
				if _, err := l.Append(context.Background(), fmt.Sprint("key-", i%4096), []raftlog.NewRecord{{Value: value}}); err == nil {
					acked.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	var scrapes atomic.Int64
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if gathering.Load() {
					_, err := reg.Gather()
					require.NoError(t, err)
					scrapes.Add(1)
				}
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	aa := os.Getenv("ESRAFT_METRICS_AA") != ""
	measure := func(on bool) float64 {
		gathering.Store(on && !aa)
		start, n0 := time.Now(), acked.Load()
		<-time.After(slice)
		return float64(acked.Load()-n0) / time.Since(start).Seconds()
	}
	measure(false) // warm-up
	var on, off, ratios []float64
	for i := range pairs {
		// Alternate which mode goes first in a pair.
		var a, b float64
		if i%2 == 0 {
			b, a = measure(false), measure(true)
		} else {
			a, b = measure(true), measure(false)
		}
		on, off, ratios = append(on, a), append(off, b), append(ratios, a/b)
	}
	t.Logf("records/s with gathering every 100 ms: median %.0f %v", median(on), rounded(on))
	t.Logf("records/s without: median %.0f %v", median(off), rounded(off))
	t.Logf("on/off per pair: %v; median of the ratios %.3f, ratio of the medians %.3f, %d gathers",
		rounded2(ratios), median(ratios), median(on)/median(off), scrapes.Load())
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}

func rounded2(v []float64) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return out
}

// BenchmarkCollectorGather is the cost of one scrape's gathering (no
// HTTP): the collector reading a single-node store's state.
func BenchmarkCollectorGather(b *testing.B) {
	store, err := eventstore.Open(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(admin.NewCollector(store, nil))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
