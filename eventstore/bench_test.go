package eventstore_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
)

// Benchmarks of the store (figures in BENCHMARKS.md):
//
//	go test -run '^$' -bench . -benchtime 3s -count 5 ./eventstore/
//
// The catch-up benchmark builds its 1,000,000-event partition once per
// process (about a minute) and reuses it for every run.

// BenchmarkAppendExpectedVersion: batch events per append (one event, and
// 64 as raftlog's batch=64 shape) with an exact expected version, to
// 10,000 distinct streams, from 64 goroutines. The batch=1 shapes keep
// the names they had before batches were measured.
func BenchmarkAppendExpectedVersion(b *testing.B) {
	for _, s := range []struct{ nodes, batch int }{{1, 1}, {3, 1}, {1, 64}, {3, 64}} {
		name := fmt.Sprintf("nodes=%d", s.nodes)
		if s.batch > 1 {
			name += fmt.Sprintf("/appenders=64/batch=%d", s.batch)
		}
		b.Run(name, func(b *testing.B) {
			b.StopTimer()
			var st *eventstore.Store
			if s.nodes == 1 {
				st = eventstoretest.Single(b).Node(0)
			} else {
				c := eventstoretest.StartCluster(b, s.nodes)
				st = c.Node(c.Leader(b))
			}
			term := st.Log().Status().Shards[0].Term
			defer func() {
				// Elections during the run (a loaded machine starving a
				// node's heartbeats) explain outliers; report them.
				b.ReportMetric(float64(st.Log().Status().Shards[0].Term-term), "elections")
			}()
			eventstoretest.BenchAppendExact(b, st, 64, s.batch)
		})
	}
}

// fillStream appends 10,000 events of 200 bytes to stream, 1,000 an
// append.
func fillStream(b *testing.B, s *eventstore.Store, stream string) {
	data := make([]byte, 200)
	for v := uint64(0); v < 10000; v += 1000 {
		evs := make([]eventstore.EventData, 1000)
		for i := range evs {
			evs[i] = eventstore.EventData{Type: "Deposited", Data: data}
		}
		if _, err := s.Append(context.Background(), stream, eventstore.Exact(v), evs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadStream reads a whole 10,000-event stream.
func BenchmarkReadStream(b *testing.B) {
	s := eventstoretest.Single(b).Node(0)
	ctx := context.Background()
	fillStream(b, s, "account-1")
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		evs, err := s.ReadStream(ctx, "account-1", 1, 10000)
		if err != nil || len(evs) != 10000 {
			b.Fatalf("read %d events: %v", len(evs), err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/read")
}

const catchUpEvents = 1_000_000

var catchUp struct {
	once  sync.Once
	dir   string
	store *eventstore.Store
	err   error
}

// catchUpStore returns a one-partition store holding catchUpEvents events
// of 100 bytes over 1,000 streams, built once per process.
func catchUpStore(b *testing.B) *eventstore.Store {
	catchUp.once.Do(func() {
		ctx := context.Background()
		catchUp.dir, catchUp.err = os.MkdirTemp("", "eventstore-catchup")
		if catchUp.err != nil {
			return
		}
		s, err := eventstore.Open(ctx, catchUp.dir, eventstore.Partitions(1))
		if err != nil {
			catchUp.err = err
			return
		}
		data := make([]byte, 100)
		var wg sync.WaitGroup
		var failed atomic.Value
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				evs := make([]eventstore.EventData, 500)
				for i := range evs {
					evs[i] = eventstore.EventData{Type: "Deposited", Data: data}
				}
				for n := w; n < catchUpEvents/len(evs); n += 8 {
					if _, err := s.Append(ctx, fmt.Sprintf("account-%d", n%1000), eventstore.Any, evs); err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			catchUp.err = err
			return
		}
		catchUp.store = s
	})
	if catchUp.err != nil {
		b.Fatal(catchUp.err)
	}
	return catchUp.store
}

// BenchmarkSubscriptionCatchUp subscribes from the beginning of a
// partition holding 1,000,000 events and reads them all.
func BenchmarkSubscriptionCatchUp(b *testing.B) {
	s := catchUpStore(b)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		sub, err := s.Subscribe(ctx, eventstore.SubscribeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < catchUpEvents; n++ {
			if _, err := sub.Next(ctx); err != nil {
				b.Fatal(err)
			}
		}
		sub.Close()
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N*catchUpEvents)/elapsed.Seconds(), "events/s")
}
