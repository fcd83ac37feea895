package projection

import (
	"context"
	"database/sql"
	"errors"
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

const testSession = 1500 * time.Millisecond

func groupOptions() GroupOptions {
	return GroupOptions{Options: fastOptions(), SessionTimeout: testSession}
}

// seen records which offsets a group handled and how often.
type seen struct {
	mu    sync.Mutex
	count map[[2]uint64]int
}

func newSeen() *seen { return &seen{count: map[[2]uint64]int{}} }

func (s *seen) handler(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	s.mu.Lock()
	s.count[[2]uint64{uint64(ev.Partition), ev.Offset}]++
	s.mu.Unlock()
	return nil
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.count)
}

// member runs one Group until its stop function is called.
type member struct {
	g    *Group
	stop func()
}

func startMember(t *testing.T, s *eventstore.Store, id string, h Handler, opt GroupOptions, tweak func(*Group)) *member {
	return runMember(t, s, "workers", id, h, opt, tweak)
}

// runMember runs member id of group until its stop function is called.
func runMember(t *testing.T, s *eventstore.Store, group, id string, h Handler, opt GroupOptions, tweak func(*Group)) *member {
	g := NewGroup(s, group, id, h, opt)
	if tweak != nil {
		tweak(g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	m := &member{g: g}
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(m.stop)
	return m
}

// owners waits until every partition has one owner among ids, none
// moving, and returns partition counts per owner.
func waitOwners(t *testing.T, s *eventstore.Store, ids ...string) map[string]int {
	t.Helper()
	var counts map[string]int
	wait.Until(t, 30*time.Second, "every partition owned by one of the members", func() bool {
		gs, ok, err := s.GroupState("workers")
		if err != nil || !ok || len(gs.Partitions) == 0 {
			return false
		}
		counts = map[string]int{}
		for _, a := range gs.Partitions {
			if a.Owner == "" || a.Revoking() {
				return false
			}
			counts[a.Owner]++
		}
		for _, id := range ids {
			if counts[id] == 0 {
				return false
			}
		}
		return len(counts) == len(ids)
	})
	return counts
}

// openWorker starts a non-voting node that joins the cluster through
// node 0.
func openWorker(t *testing.T, c eventstoretest.Cluster) *eventstore.Store {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := eventstore.Open(ctx, filepath.Join(t.TempDir(), "w1"),
		eventstore.Node("w1", "127.0.0.1:0"), eventstore.Join(c.Node(0).Log().Addr()), eventstore.NonVoter(),
		eventstore.LogConfig(eventstoretest.Timings))
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return w
}

// Three members on three nodes share 8 partitions, one owner each; a
// non-voting worker node that joins takes its share; a member that
// crashes loses its partitions within its session timeout plus one
// rebalance; every event of the workload is handled at least once.
func TestGroupSharesPartitionsAndSurvivesMemberCrash(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3)
	sn := newSeen()
	var members []*member
	var crashing atomic.Bool
	var uncommitted atomic.Int64
	for i := 0; i < 3; i++ {
		members = append(members, startMember(t, c.Node(i), []string{"m1", "m2", "m3"}[i], sn.handler, groupOptions(), func(g *Group) {
			if i == 2 { // m3 will crash: a batch handled and never committed, no goodbye
				g.testNoLeave = true
				g.testBeforeCommit = func() error {
					if crashing.Load() {
						uncommitted.Add(1)
						return errors.New("crashed")
					}
					return nil
				}
			}
		}))
	}
	counts := waitOwners(t, c.Node(0), "m1", "m2", "m3")
	for id, n := range counts {
		require.True(t, n == 2 || n == 3, "%s owns %d", id, n)
	}

	// A worker node joins and takes its share.
	w := openWorker(t, c)
	startMember(t, w, "m4", sn.handler, groupOptions(), nil)
	counts = waitOwners(t, c.Node(0), "m1", "m2", "m3", "m4")
	for id, n := range counts {
		require.Equal(t, 2, n, "%s owns %d of 8", id, n)
	}

	// The workload: 100,000 events, appended while m3 crashes mid-stream.
	const total = 100000
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		appendEvents(t, c.Node(0), "acct", total, 64, 100)
	}()
	wait.Until(t, 60*time.Second, "a fifth of the workload handled", func() bool { return sn.distinct() >= total/5 })
	gs, _, _ := c.Node(0).GroupState("workers")
	var crashedParts []eventstore.Partition
	for _, a := range gs.Partitions {
		if a.Owner == "m3" {
			crashedParts = append(crashedParts, a.Partition)
		}
	}
	crashing.Store(true)
	wait.Until(t, 30*time.Second, "m3 to handle a batch it never commits", func() bool { return uncommitted.Load() > 0 })
	crashAt := time.Now()
	members[2].stop()
	waitOwners(t, c.Node(0), "m1", "m2", "m4")
	moved := time.Since(crashAt)
	t.Logf("m3's partitions %v moved %v after the crash (session timeout %v)", crashedParts, moved, testSession)
	require.Less(t, moved, testSession+testSession/3+2*time.Second, "within the session timeout plus a heartbeat and a rebalance")
	<-loaded
	wait.Until(t, 120*time.Second, "every event handled", func() bool { return sn.distinct() == total })
	dup := 0
	sn.mu.Lock()
	for _, n := range sn.count {
		if n > 1 {
			dup++
		}
	}
	sn.mu.Unlock()
	t.Logf("%d events handled, %d of them more than once (at-least-once)", total, dup)
	require.Positive(t, dup, "m3's uncommitted batch was handled again by the next owner")
}

// A member paused past its session (no heartbeats, a batch in hand)
// comes back to find its partitions reassigned; its commit is rejected
// as stale and the new owner's progress stands.
func TestGroupZombieCommitIsRejected(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3)
	s := c.Node(0)
	var pause sync.Mutex // held while m1 is paused
	// Held while m1's heartbeats are paused: until its commit was seen
	// refused, so that it commits before a heartbeat could tell it of
	// the revocation (it would then give the batch back uncommitted).
	var hbPause sync.Mutex
	inHandler := make(chan struct{}, 1)
	var zombieHandling atomic.Bool
	h1 := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if zombieHandling.Load() {
			select {
			case inHandler <- struct{}{}:
			default:
			}
			pause.Lock() // frozen mid-batch
			pause.Unlock()
		}
		return nil
	}
	var observedStale atomic.Pointer[CommitAttempt]
	opt1 := groupOptions()
	opt1.OnCommit = func(a CommitAttempt) {
		var sge *eventstore.StaleGenerationError
		if errors.As(a.Err, &sge) {
			observedStale.Store(&a)
		}
	}
	m1 := startMember(t, s, "m1", h1, opt1, func(g *Group) {
		g.testBeforeHeartbeat = func() { hbPause.Lock(); hbPause.Unlock() }
		g.testNoLeave = true
	})
	waitOwners(t, s, "m1")
	gs, _, _ := s.GroupState("workers")
	oldGen := gs.Partitions[0].Generation

	// m1 freezes: inside a batch, and its heartbeats stop.
	pause.Lock()
	hbPause.Lock()
	var hbOnce sync.Once
	resumeHeartbeats := func() { hbOnce.Do(hbPause.Unlock) }
	defer resumeHeartbeats() // also when the test fails before the end
	zombieHandling.Store(true)
	_, err := s.Append(context.Background(), streamIn(s, 0), eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	<-inHandler
	// m2 joins elsewhere; after m1's session expires it owns everything.
	sn := newSeen()
	startMember(t, c.Node(1), "m2", sn.handler, groupOptions(), nil)
	waitOwners(t, s, "m2")
	gs, _, _ = s.GroupState("workers")
	require.Greater(t, gs.Partitions[0].Generation, oldGen)
	wait.Until(t, 30*time.Second, "m2 handled the event", func() bool { return sn.distinct() == 1 })
	wait.Until(t, 30*time.Second, "m2 committed", func() bool {
		gs, _, _ := s.GroupState("workers")
		return gs.Partitions[0].Committed == 1
	})

	// m1 wakes up and tries to commit the batch it had in hand.
	zombieHandling.Store(false)
	pause.Unlock()
	wait.Until(t, 30*time.Second, "the zombie's commit to be rejected", func() bool { return observedStale.Load() != nil })
	resumeHeartbeats()
	gs, _, _ = s.GroupState("workers")
	require.Equal(t, "m2", gs.Partitions[0].Owner)
	// OnCommit saw the rejected attempt, with the generation it carried.
	a := observedStale.Load()
	require.NotNil(t, a)
	require.Equal(t, eventstore.Partition(0), a.Partition)
	require.Equal(t, oldGen, a.Generation)
	require.Equal(t, uint64(1), a.Offset)

	// The rejection is the log's: a direct commit at the old generation
	// fails too.
	_, err = s.CommitOffsets(context.Background(), "workers", "m1", []eventstore.OffsetCommit{{Partition: 0, Generation: oldGen, Offset: 1}})
	var sge *eventstore.StaleGenerationError
	require.True(t, errors.As(err, &sge), "got %v", err)
	m1.stop()
}

// streamIn returns a stream name that routes to partition p.
func streamIn(s *eventstore.Store, p eventstore.Partition) string {
	for i := 0; ; i++ {
		name := "acct-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		if s.PartitionOf(name) == p {
			return name
		}
	}
}

// A poison event parks in the group state; other streams of the partition
// keep flowing; Retry from any node makes the owner handle it again.
func TestGroupParksAndRetries(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3)
	s := c.Node(0)
	var broken atomic.Bool
	broken.Store(true)
	sn := newSeen()
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "bad-1" && broken.Load() {
			return errors.New("poison")
		}
		return sn.handler(ctx, tx, ev)
	}
	m := startMember(t, s, "m1", h, groupOptions(), nil)
	waitOwners(t, s, "m1")
	p := s.PartitionOf("bad-1")
	good := streamIn(s, p)
	ctx := context.Background()
	for v := 0; v < 3; v++ {
		for _, st := range []string{"bad-1", good} {
			_, err := s.Append(ctx, st, eventstore.Exact(uint64(v)), []eventstore.EventData{{Type: "Tick"}})
			require.NoError(t, err)
		}
	}
	wait.Until(t, 30*time.Second, "good events handled and bad ones parked", func() bool {
		parked, _ := m.g.Parked()
		return sn.distinct() == 3 && len(parked) == 3
	})
	parked, _ := m.g.Parked()
	for _, pe := range parked {
		require.Equal(t, "bad-1", pe.Stream, "only the poison event's stream is parked")
	}
	require.Equal(t, "poison", parked[0].Error)
	require.Contains(t, parked[1].Error, "waiting behind")
	broken.Store(false)
	require.NoError(t, c.Node(2).RetryParked(ctx, "workers", p, parked[0].Offset))
	wait.Until(t, 30*time.Second, "parked events handled", func() bool {
		parked, _ := m.g.Parked()
		return sn.distinct() == 6 && len(parked) == 0
	})
	st := m.g.Status()
	require.Zero(t, st.Parked)
	require.Zero(t, st.Lag)
}

// OnGrant sees every partition granted to the member, with the grant's
// generation, before its events are handled; OnCommit sees each commit
// attempt with the generation it carried and its outcome.
func TestGroupObserverHooks(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3)
	s := c.Node(0)
	type grant struct {
		gen, from uint64
		handled   bool // an event of the partition was handled before the grant was seen
	}
	var mu sync.Mutex
	grants := map[eventstore.Partition]grant{}
	handled := map[eventstore.Partition]bool{}
	var commits []CommitAttempt
	opt := groupOptions()
	opt.OnGrant = func(p eventstore.Partition, gen, from uint64) {
		mu.Lock()
		grants[p] = grant{gen: gen, from: from, handled: handled[p]}
		mu.Unlock()
	}
	opt.OnCommit = func(a CommitAttempt) {
		mu.Lock()
		commits = append(commits, a)
		mu.Unlock()
	}
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		mu.Lock()
		handled[ev.Partition] = true
		mu.Unlock()
		return nil
	}
	startMember(t, s, "m1", h, opt, nil)
	waitOwners(t, s, "m1")
	gs, _, _ := s.GroupState("workers")
	wait.Until(t, 10*time.Second, "a grant seen for every partition", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(grants) == len(gs.Partitions)
	})
	mu.Lock()
	for _, a := range gs.Partitions {
		require.Equal(t, grant{gen: a.Generation}, grants[a.Partition], "partition %d", a.Partition)
	}
	mu.Unlock()

	res, err := s.Append(context.Background(), streamIn(s, 1), eventstore.Any, []eventstore.EventData{{Type: "Tick"}, {Type: "Tick"}})
	require.NoError(t, err)
	var got CommitAttempt
	wait.Until(t, 10*time.Second, "the commit of partition 1 observed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range commits {
			if a.Partition == res.Partition && a.Offset == res.FirstOffset+2 {
				got = a
				return true
			}
		}
		return false
	})
	require.NoError(t, got.Err)
	require.Equal(t, gs.Partitions[res.Partition].Generation, got.Generation)
	require.False(t, got.End.Before(got.Start))
	// This node applies the acknowledged commit in its own time.
	wait.Until(t, 10*time.Second, "the commit applied on this node", func() bool {
		gs, _, _ := s.GroupState("workers")
		return gs.Partitions[res.Partition].Committed == res.FirstOffset+2
	})
}

// A member retrying a failing event holds no transaction while it waits:
// another partition's events, which need the same database's one writer,
// are handled meanwhile, not after the poison event is parked.
func TestGroupRetryHoldsNoTransaction(t *testing.T) {
	s := eventstoretest.Single(t).Node(0)
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()
	var attempts atomic.Int32
	failed := make(chan struct{})
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "poison" {
			if attempts.Add(1) == 1 {
				close(failed)
			}
			return errors.New("poison")
		}
		return recordHandler(ctx, tx, ev)
	}
	opt := groupOptions()
	opt.DB = db
	opt.MaxAttempts, opt.Backoff, opt.MaxBackoff = 3, 3*time.Second, 3*time.Second
	startMember(t, s, "m1", h, opt, nil)
	waitOwners(t, s, "m1")
	ctx := context.Background()
	_, err = s.Append(ctx, "poison", eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	<-failed
	other := streamIn(s, (s.PartitionOf("poison")+1)%eventstore.Partition(s.Partitions()))
	_, err = s.Append(ctx, other, eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	var atHandled int32
	wait.Until(t, 30*time.Second, "the other partition's event handled", func() bool {
		rows, _ := countHandled(t, db)
		atHandled = attempts.Load()
		return rows == 1
	})
	require.Less(t, atHandled, int32(opt.MaxAttempts), "handled only once the poison event had used up its attempts")
}
