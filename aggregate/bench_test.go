package aggregate_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
)

// reportLatencies reports the p50 and p99 of lat in milliseconds.
func reportLatencies(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkLoad10k loads an account of 10,000 events (Opened and 9,999
// deposits) on the single-node store. With snapshots (every 100 events)
// the latest snapshot is at version 9,950, so a load reads it plus a
// tail of 50 events, half the snapshot interval: the average case.
func BenchmarkLoad10k(b *testing.B) {
	for _, snap := range []int{0, 100} {
		name := "snapshots=off"
		if snap > 0 {
			name = "snapshots=on"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			store := openStore(b, b.TempDir())
			var opts []aggregate.TypeOption
			if snap > 0 {
				opts = append(opts, aggregate.SnapshotEvery(snap))
			}
			writer := aggregate.NewRepository(store, newAccounts(opts...))
			_, err := writer.Create(ctx, "big", OpenAccount("ann"))
			require.NoError(b, err)
			for _, n := range []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 949, 50} {
				_, err := writer.Execute(ctx, "big", func(Account) ([]any, error) {
					evs := make([]any, n)
					for i := range evs {
						evs[i] = Deposited{Amount: 1}
					}
					return evs, nil
				})
				require.NoError(b, err)
			}
			spy := &spyStore{Store: store}
			repo := aggregate.NewRepository(spy, newAccounts(opts...))
			lat := make([]time.Duration, 0, 1<<16)
			for b.Loop() {
				t0 := time.Now()
				acct, err := repo.Load(ctx, "big")
				lat = append(lat, time.Since(t0))
				if err != nil || acct.Version != 10_000 || acct.State.Balance != 9_999 {
					b.Fatalf("load: version %d balance %d err %v", acct.Version, acct.State.Balance, err)
				}
			}
			b.ReportMetric(float64(spy.eventsRead.Load())/float64(len(lat)), "events-read/op")
			reportLatencies(b, lat)
		})
	}
}

// BenchmarkUpdateParallel runs Update (load, decide one deposit, append
// with the loaded version expected) from 64 goroutines, each on accounts
// of its own (16 each, 1,024 in all, so there are no conflicts), on the
// single-node store, with snapshots every 100 events. Each Update reads
// the events since the last snapshot, so the figure depends on how many
// updates each account has had: run it with a fixed count
// (-benchtime 30000x: about 30 per account) to compare runs.
func BenchmarkUpdateParallel(b *testing.B) {
	const goroutines, perGoroutine = 64, 16
	ctx := context.Background()
	store := openStore(b, b.TempDir())
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(100)))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				_, err := repo.Create(ctx, fmt.Sprintf("%d-%d", g, i), OpenAccount("ann"))
				if err != nil {
					b.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var next atomic.Int64
	lats := make([][]time.Duration, goroutines)
	b.ResetTimer()
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			ids := make([]string, perGoroutine)
			for i := range ids {
				ids[i] = strconv.Itoa(g) + "-" + strconv.Itoa(i)
			}
			for i := 0; next.Add(1) <= int64(b.N); i++ {
				t0 := time.Now()
				_, err := repo.Update(ctx, ids[i%perGoroutine], deposit(1))
				lats[g] = append(lats[g], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
	reportLatencies(b, slices.Concat(lats...))
}
