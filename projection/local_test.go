package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/wait"
)

// The read model of the tests: every handled event is a row (duplicates
// would show), and a count per stream.
var testSchema = []string{`
CREATE TABLE handled (partition INTEGER NOT NULL, offset INTEGER NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE per_stream (stream TEXT PRIMARY KEY, n INTEGER NOT NULL, last_version INTEGER NOT NULL);`}

func recordHandler(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO handled VALUES (?, ?, ?, ?)`, ev.Partition, ev.Offset, ev.Stream, ev.Version); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO per_stream VALUES (?, 1, ?) ON CONFLICT (stream) DO UPDATE SET n = n + 1, last_version = excluded.last_version`, ev.Stream, ev.Version)
	return err
}

func fastOptions() Options {
	return Options{BatchSize: 100, MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

// appendEvents appends n events over streams stream-0..stream-(streams-1),
// batch events per append, and returns the heads it reached.
func appendEvents(t testing.TB, s *eventstore.Store, prefix string, n, streams, batch int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i += batch {
		evs := make([]eventstore.EventData, min(batch, n-i))
		for j := range evs {
			evs[j] = eventstore.EventData{Type: "Tick", Data: []byte(fmt.Sprint(i + j))}
		}
		_, err := s.Append(ctx, fmt.Sprintf("%s-%d", prefix, (i/batch)%streams), eventstore.Any, evs)
		require.NoError(t, err)
	}
}

func waitCaughtUp(t testing.TB, status func() Status) {
	t.Helper()
	wait.Until(t, 60*time.Second, "projection caught up", func() bool {
		st := status()
		return st.Lag == 0 && len(st.Partitions) > 0
	})
}

func countHandled(t testing.TB, db *sqlite.DB) (rows, distinct int) {
	t.Helper()
	require.NoError(t, db.View(context.Background(), func(d *sql.DB) error {
		return d.QueryRow(`SELECT count(*), count(DISTINCT partition || '/' || offset) FROM handled`).Scan(&rows, &distinct)
	}))
	return rows, distinct
}

func totalHeads(t testing.TB, s *eventstore.Store) int {
	n := 0
	for p := range eventstore.Partition(s.Partitions()) {
		h, err := s.Head(p)
		require.NoError(t, err)
		n += int(h)
	}
	return n
}

// A crash between handling a batch and committing it loses the batch's
// changes and its checkpoint together: after restarts every event is in
// the read model exactly once.
func TestLocalExactlyOnceAcrossCrashes(t *testing.T) {
	s := eventstoretest.Single(t).Node(0)
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()
	const total = 100000
	appendEvents(t, s, "acct", total, 50, 100)

	crashes := 0
	var batches atomic.Int64
	for {
		opt := fastOptions()
		opt.BatchSize = 500
		r := NewLocal(s, db, "model", recordHandler, opt)
		r.testBeforeCommit = func() error {
			if batches.Add(1)%17 == 0 {
				return errors.New("injected crash before commit")
			}
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- r.Run(ctx) }()
		done := make(chan struct{})
		go func() {
			defer close(done)
			wait.Until(t, 60*time.Second, "caught up or crashed", func() bool {
				select {
				case err := <-errc:
					errc <- err
					return true
				default:
				}
				return r.Status().Lag == 0 && len(r.Status().Partitions) > 0
			})
		}()
		<-done
		cancel()
		err := <-errc
		if err == nil {
			break
		}
		require.ErrorContains(t, err, "injected crash")
		crashes++
	}
	require.Greater(t, crashes, 3, "crashes were injected")
	rows, distinct := countHandled(t, db)
	if rows != total {
		for p := range eventstore.Partition(s.Partitions()) {
			head, _ := s.Head(p)
			var n, maxOff int
			var cp int64
			db.View(context.Background(), func(d *sql.DB) error {
				d.QueryRow(`SELECT count(*), coalesce(max(offset),-1) FROM handled WHERE partition = ?`, p).Scan(&n, &maxOff)
				return d.QueryRow(`SELECT next_offset FROM esraft_checkpoints WHERE partition = ?`, p).Scan(&cp)
			})
			t.Logf("partition %d: head %d, handled %d (max offset %d), checkpoint %d", p, head, n, maxOff, cp)
		}
	}
	require.Equal(t, total, rows, "every event handled exactly once")
	require.Equal(t, total, distinct)
	t.Logf("%d events, %d crashes between handling and commit", total, crashes)
}

// A poison event is parked after MaxAttempts; its stream's later events
// wait behind it, parked too; other streams of the partition keep flowing;
// Retry handles the parked ones in order once the cause is fixed.
func TestLocalParksPoisonEvents(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(1)).Node(0)
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()
	var broken atomic.Bool
	broken.Store(true)
	var attempts atomic.Int64
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "bad-1" && ev.Version == 2 && broken.Load() {
			attempts.Add(1)
			return errors.New("cannot handle bad-1 v2")
		}
		return recordHandler(ctx, tx, ev)
	}
	r := NewLocal(s, db, "model", h, fastOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()

	ctxA := context.Background()
	for v := 1; v <= 3; v++ {
		for _, stream := range []string{"bad-1", "good-1"} {
			_, err := s.Append(ctxA, stream, eventstore.Exact(uint64(v-1)), []eventstore.EventData{{Type: "Tick"}})
			require.NoError(t, err)
		}
	}
	waitCaughtUp(t, r.Status)
	parked, err := r.Parked(ctxA)
	require.NoError(t, err)
	require.Len(t, parked, 2)
	require.Equal(t, "bad-1", parked[0].Stream)
	require.Contains(t, parked[0].Error, "cannot handle")
	require.Equal(t, 3, parked[0].Attempts)
	require.Contains(t, parked[1].Error, "waiting behind")
	require.Equal(t, int64(3), attempts.Load())
	require.Equal(t, 2, r.Status().Parked)
	var good, bad int
	require.NoError(t, db.View(ctxA, func(d *sql.DB) error {
		if err := d.QueryRow(`SELECT n FROM per_stream WHERE stream = 'good-1'`).Scan(&good); err != nil {
			return err
		}
		return d.QueryRow(`SELECT n FROM per_stream WHERE stream = 'bad-1'`).Scan(&bad)
	}))
	require.Equal(t, 3, good, "the other stream kept flowing")
	require.Equal(t, 1, bad)

	// Still broken: the retry fails and counts the attempt.
	require.Error(t, r.Retry(ctxA, 0, parked[0].Offset))
	broken.Store(false)
	require.ErrorIs(t, r.Retry(ctxA, 0, 999), ErrNotParked)
	require.NoError(t, r.Retry(ctxA, 0, parked[0].Offset))
	parked, err = r.Parked(ctxA)
	require.NoError(t, err)
	require.Empty(t, parked)
	var last int
	require.NoError(t, db.View(ctxA, func(d *sql.DB) error {
		return d.QueryRow(`SELECT n, last_version FROM per_stream WHERE stream = 'bad-1'`).Scan(&bad, &last)
	}))
	require.Equal(t, 3, bad)
	require.Equal(t, 3, last, "handled in order")
	// The stream flows again.
	_, err = s.Append(ctxA, "bad-1", eventstore.Exact(3), []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	waitCaughtUp(t, r.Status)
	require.NoError(t, db.View(ctxA, func(d *sql.DB) error {
		return d.QueryRow(`SELECT n FROM per_stream WHERE stream = 'bad-1'`).Scan(&bad)
	}))
	require.Equal(t, 4, bad)
	cancel()
	require.NoError(t, <-errc)
}

// A rebuild replays everything into a new database while appends go on and
// readers keep reading the old one; after the switch the read model is
// the one the live projection had, and no read failed.
func TestLocalRebuildSwitchesWithoutReadErrors(t *testing.T) {
	s := eventstoretest.Single(t).Node(0)
	dir := t.TempDir()
	db, err := sqlite.Open(context.Background(), dir, testSchema...)
	require.NoError(t, err)
	defer db.Close()
	appendEvents(t, s, "acct", 5000, 40, 20)
	r := NewLocal(s, db, "model", recordHandler, fastOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	waitCaughtUp(t, r.Status)

	// Readers and a writer run through the rebuild.
	stop := make(chan struct{})
	stopAll := sync.OnceFunc(func() { close(stop) })
	var wg sync.WaitGroup
	// On any failure below, the readers and the writer stop before the
	// test returns (and before ctx is cancelled under them).
	defer func() { stopAll(); wg.Wait() }()
	var reads, readErrs atomic.Int64
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := db.View(ctx, func(d *sql.DB) error {
					var n int
					return d.QueryRow(`SELECT count(*) FROM per_stream`).Scan(&n)
				})
				reads.Add(1)
				if err != nil {
					readErrs.Add(1)
					t.Errorf("read during rebuild: %v", err)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A bounded number of appends: an unbounded writer on a loaded
		// 2-core machine can outrun the replay, which then never reaches
		// the head to switch.
		for i := 0; i < 3000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := s.Append(context.Background(), fmt.Sprintf("acct-%d", i%40), eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
			if err != nil {
				t.Errorf("append: %v", err)
				return
			}
		}
	}()
	require.NoError(t, r.Rebuild(ctx))
	require.ErrorIs(t, r.Rebuild(ctx), ErrRebuildRunning)
	done, rbErr := r.RebuildDone()
	sawProgress := false
	wait.Until(t, 120*time.Second, "rebuild to finish", func() bool {
		if st := r.Status(); st.Rebuild != nil && st.Rebuild.Total > 0 {
			sawProgress = true
		}
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	require.NoError(t, rbErr())
	require.True(t, sawProgress, "progress was reported")
	stopAll()
	wg.Wait()
	waitCaughtUp(t, r.Status)
	require.Zero(t, readErrs.Load())
	require.Positive(t, reads.Load())

	// The switched-to model equals what the events say.
	rows, distinct := countHandled(t, db)
	total := totalHeads(t, s)
	require.Equal(t, total, rows, "rebuilt model holds every event once")
	require.Equal(t, total, distinct)
	var sum int
	require.NoError(t, db.View(ctx, func(d *sql.DB) error {
		return d.QueryRow(`SELECT sum(n) FROM per_stream`).Scan(&sum)
	}))
	require.Equal(t, total, sum)
	current, err := os.ReadFile(filepath.Join(dir, "CURRENT"))
	require.NoError(t, err)
	require.Equal(t, "1\n", string(current), "the new database is live")
	cancel()
	require.NoError(t, <-errc)

	// Reopening finds the rebuilt database.
	require.NoError(t, db.Close())
	db2, err := sqlite.Open(context.Background(), dir, testSchema...)
	require.NoError(t, err)
	defer db2.Close()
	rows, _ = countHandled(t, db2)
	require.Equal(t, total, rows)
}

// A read model whose checkpoints are beyond the log's heads (the log lost
// events, or was restored from an older copy) stops with a clear error
// instead of skipping the events later appended at those offsets; a
// rebuild replays it from the log.
func TestLocalRefusesCheckpointAheadOfLog(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()

	// The read model follows a log of 200 events...
	first := eventstoretest.Single(t).Node(0)
	appendEvents(t, first, "acct", 200, 10, 20)
	r := NewLocal(first, db, "model", recordHandler, fastOptions())
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- r.Run(rctx) }()
	wait.Until(t, 30*time.Second, "caught up", func() bool { return r.Status().Lag == 0 && len(r.Status().Partitions) > 0 })
	cancel()
	require.NoError(t, <-errc)

	// ...and is then run against a log that holds fewer.
	second := eventstoretest.Single(t).Node(0)
	appendEvents(t, second, "acct", 20, 10, 20)
	r = NewLocal(second, db, "model", recordHandler, fastOptions())
	tctx, stop := context.WithTimeout(ctx, 10*time.Second) // without the check, Run follows on until ctx ends
	defer stop()
	err = r.Run(tctx)
	require.ErrorIs(t, err, ErrCheckpointAhead)
	require.ErrorContains(t, err, "rebuild")
	rows, _ := countHandled(t, db)
	require.Equal(t, 200, rows, "nothing of the second log was handled")
}

// A retry or skip of a parked event while a rebuild switches read models
// waits for the new model's processor: the old one's database is the one
// the switch replaced (it answered 500 through the admin API, about once
// in 60 runs of a rebuild followed at once by a retry).
func TestLocalParkedActionDuringSwitchWaitsForNewModel(t *testing.T) {
	r, stop := runLocal(t, eventstoretest.Single(t).Node(0), recordHandler, 200, 4, 20)
	ctx := context.Background()
	r.mu.Lock()
	old := r.live
	r.mu.Unlock()

	duringSwitch := make(chan error, 1)
	waited := make(chan *proc, 1)
	r.testAfterPromote = func() {
		gone, stop := context.WithCancel(context.Background())
		stop()
		_, err := r.liveProc(gone) // must wait, so gives up at once
		duringSwitch <- err
		go func() {
			p, err := r.liveProc(context.Background())
			if err != nil {
				t.Errorf("liveProc after the switch: %v", err)
			}
			waited <- p
		}()
	}
	require.NoError(t, r.Rebuild(ctx))
	done, rbErr := r.RebuildDone()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the rebuild did not end in 2 minutes")
	}
	require.NoError(t, rbErr())
	require.ErrorIs(t, <-duringSwitch, ErrNotRunning, "during the switch, the old processor is not handed out")
	var p *proc
	select {
	case p = <-waited:
	case <-time.After(time.Minute):
		t.Fatal("a wait for the new model's processor did not end")
	}
	require.NotSame(t, old, p)
	r.mu.Lock()
	live := r.live
	r.mu.Unlock()
	require.Same(t, live, p, "the waiter got the new model's processor")
	require.ErrorIs(t, r.Retry(ctx, 0, 5), ErrNotParked)
	stop()
}

// Status answers while a handler holds a batch (it is what /metrics and
// the admin API ask for): with the positions of its last report, against
// the heads of now. It waited for the batch before, so a slow handler
// held up every scrape.
func TestLocalStatusDoesNotWaitForAHandler(t *testing.T) {
	s := eventstoretest.Single(t).Node(0)
	var block atomic.Bool
	inHandler, release := make(chan struct{}, 1), make(chan struct{})
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if block.Load() {
			select {
			case inHandler <- struct{}{}:
			default:
			}
			<-release
		}
		return recordHandler(ctx, tx, ev)
	}
	r, stop := runLocal(t, s, h, 10, 2, 5)
	block.Store(true)
	appendEvents(t, s, "acct", 1, 1, 1)
	select {
	case <-inHandler:
	case <-time.After(time.Minute):
		t.Fatal("the handler did not get the new event")
	}
	got := make(chan Status, 1)
	go func() { got <- r.Status() }()
	select {
	case st := <-got:
		require.Equal(t, uint64(1), st.Lag, "the event in hand is not handled yet")
	case <-time.After(30 * time.Second):
		t.Fatal("Status waited for the handler")
	}
	close(release)
	waitCaughtUp(t, r.Status)
	stop()
}

// After Run has ended, a rebuild's switch has no Run to make a new
// processor live: a retry or skip must not wait for one.
func TestLocalParkedActionAfterRunEndedDoesNotWait(t *testing.T) {
	r, stop := runLocal(t, eventstoretest.Single(t).Node(0), recordHandler, 10, 2, 5)
	stop()
	r.pauseLive() // as a rebuild's switch does
	r.resumeLive()
	bounded, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	_, err := r.liveProc(bounded)
	require.NoError(t, err, "no wait for a switch that no Run will end")
	require.ErrorIs(t, r.Retry(bounded, 0, 5), ErrNotParked)
}

// runLocal runs a local projection named "model" over a new read model
// holding the test schema, with events already appended to s as
// appendEvents does (n events over streams acct-0..), until it has
// caught up. stop cancels its Run and checks that Run returned nil.
func runLocal(t *testing.T, s *eventstore.Store, h Handler, n, streams, batch int) (r *Local, stop func()) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	appendEvents(t, s, "acct", n, streams, batch)
	r = NewLocal(s, db, "model", h, fastOptions())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	waitCaughtUp(t, r.Status)
	return r, func() {
		t.Helper()
		cancel()
		require.NoError(t, <-errc)
	}
}
