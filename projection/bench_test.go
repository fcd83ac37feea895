package projection

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/projection/sqlite"
)

// Benchmarks (figures in BENCHMARKS.md):
//
//	go test -run '^$' -bench . -benchtime 1x -count 5 ./projection/

const replayEvents = 1_000_000

var replayStore struct {
	once  sync.Once
	dir   string
	store *eventstore.Store
	err   error
}

// replaySource holds 1,000,000 events of 100 bytes over 10,000 streams in
// 8 partitions, built once per process.
func replaySource(b *testing.B) *eventstore.Store {
	replayStore.once.Do(func() {
		ctx := context.Background()
		if replayStore.dir, replayStore.err = os.MkdirTemp("", "projection-replay"); replayStore.err != nil {
			return
		}
		s, err := eventstore.Open(ctx, replayStore.dir)
		if err != nil {
			replayStore.err = err
			return
		}
		data := []byte(`{"amount_cents":1250,"currency":"EUR","note":"a payload of about one hundred bytes, JSON"}`)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				evs := make([]eventstore.EventData, 500)
				for i := range evs {
					evs[i] = eventstore.EventData{Type: "Deposited", Data: data}
				}
				for n := w; n < replayEvents/len(evs); n += 8 {
					if _, err := s.Append(ctx, fmt.Sprintf("account-%d", n%10000), eventstore.Any, evs); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		replayStore.err = <-errs
		replayStore.store = s
	})
	if replayStore.err != nil {
		b.Fatal(replayStore.err)
	}
	return replayStore.store
}

// balanceHandler is a typical read-model handler: an upsert per event.
func balanceHandler(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	_, err := Exec(ctx, tx, `INSERT INTO balances (stream, n, version) VALUES (?, 1, ?)
		ON CONFLICT (stream) DO UPDATE SET n = n + 1, version = excluded.version`, ev.Stream, ev.Version)
	return err
}

var balanceSchema = `CREATE TABLE balances (stream TEXT PRIMARY KEY, n INTEGER NOT NULL, version INTEGER NOT NULL)`

// replayRun is a local projection of balanceHandler into an empty read
// model, over the replay source.
type replayRun struct {
	r    *Local
	db   *sqlite.DB
	errc chan error
	stop context.CancelFunc
}

func newReplayRun(b *testing.B, s *eventstore.Store) *replayRun {
	db, err := sqlite.Open(context.Background(), b.TempDir(), balanceSchema)
	if err != nil {
		b.Fatal(err)
	}
	return &replayRun{r: NewLocal(s, db, "balances", balanceHandler, Options{BatchSize: 2000}), db: db, errc: make(chan error, 1)}
}

// start runs the projection until close.
func (rr *replayRun) start() {
	ctx, cancel := context.WithCancel(context.Background())
	rr.stop = cancel
	go func() { rr.errc <- rr.r.Run(ctx) }()
}

// waitCaughtUp polls until the live read model has handled every event.
func (rr *replayRun) waitCaughtUp() {
	for rr.r.Status().Lag != 0 || len(rr.r.Status().Partitions) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
}

func (rr *replayRun) close(b *testing.B) {
	rr.stop()
	if err := <-rr.errc; err != nil {
		b.Fatal(err)
	}
	rr.db.Close()
}

// BenchmarkReplay replays 1,000,000 events into a fresh SQLite read model.
func BenchmarkReplay(b *testing.B) {
	s := replaySource(b)
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rr := newReplayRun(b, s)
		b.StartTimer()
		start := time.Now()
		rr.start()
		rr.waitCaughtUp()
		elapsed += time.Since(start)
		b.StopTimer()
		rr.close(b)
	}
	b.ReportMetric(float64(b.N*replayEvents)/elapsed.Seconds(), "events/s")
}

// BenchmarkRebuild replays 1,000,000 events into a new read model with
// Local.Rebuild, beside a live one that has caught up (outside the timer),
// up to the switch: the events/s of a rebuild, to compare with
// BenchmarkReplay's first start on an empty database.
func BenchmarkRebuild(b *testing.B) {
	s := replaySource(b)
	b.ResetTimer()
	var elapsed time.Duration
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rr := newReplayRun(b, s)
		rr.start()
		rr.waitCaughtUp()
		b.StartTimer()
		start := time.Now()
		if err := rr.r.Rebuild(ctx); err != nil {
			b.Fatal(err)
		}
		done, rebuildErr := rr.r.RebuildDone()
		<-done
		elapsed += time.Since(start)
		b.StopTimer()
		if err := rebuildErr(); err != nil {
			b.Fatal(err)
		}
		var n int
		if err := rr.db.View(ctx, func(db *sql.DB) error {
			return db.QueryRowContext(ctx, `SELECT sum(n) FROM balances`).Scan(&n)
		}); err != nil || n != replayEvents {
			b.Fatalf("the rebuilt read model counts %d events (%v), want %d", n, err, replayEvents)
		}
		rr.close(b)
	}
	b.ReportMetric(float64(b.N*replayEvents)/elapsed.Seconds(), "events/s")
}

// BenchmarkEndToEndLatency appends 1,000 events/s (one per append) and
// measures, per event, the time from the append's acknowledgement to the
// commit of the read-model transaction that holds it (0 if that commit
// came first).
func BenchmarkEndToEndLatency(b *testing.B) {
	s := eventstoretest.Single(b).Node(0)
	db, err := sqlite.Open(context.Background(), b.TempDir(), balanceSchema)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	type key struct {
		p   eventstore.Partition
		off uint64
	}
	var mu sync.Mutex
	acked := map[key]time.Time{}
	committed := map[key]time.Time{}
	r := NewLocal(s, db, "balances", balanceHandler, Options{})
	r.testAfterCommit = func(evs []eventstore.Event) {
		now := time.Now()
		mu.Lock()
		for _, ev := range evs {
			committed[key{ev.Partition, ev.Offset}] = now
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	n := max(b.N, 3000)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; i < n; i++ {
		<-tick.C
		res, err := s.Append(ctx, fmt.Sprintf("e2e-%d", i), eventstore.NoStream, []eventstore.EventData{{Type: "Deposited"}})
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		mu.Lock()
		acked[key{res.Partition, res.FirstOffset}] = now
		mu.Unlock()
	}
	for {
		mu.Lock()
		done := len(committed) >= n
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-errc
	lat := make([]time.Duration, 0, n)
	for k, at := range acked {
		lat = append(lat, max(0, committed[k].Sub(at)))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkExec is the handler's per-event cost alone: balanceHandler's
// upsert through Exec in a handler transaction whose ctx can be cancelled
// (as a runner's is), over 10,000 streams, 2,000 events per transaction.
func BenchmarkExec(b *testing.B) {
	db, err := sqlite.Open(context.Background(), b.TempDir(), balanceSchema)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]string, 10000)
	for i := range streams {
		streams[i] = fmt.Sprintf("account-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		err := db.Update(ctx, func(tx *sql.Tx) error {
			hctx := withTxStmts(ctx, tx)
			for n := 0; n < 2000 && done < b.N; n, done = n+1, done+1 {
				ev := eventstore.Event{Stream: streams[done%len(streams)], Version: uint64(done)}
				if err := balanceHandler(hctx, tx, ev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
