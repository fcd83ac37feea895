package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/systemtest/wait"
)

// requireAllCommitted checks that group has nothing parked and every
// partition committed up to its head.
func requireAllCommitted(t *testing.T, s *eventstore.Store, group string) {
	t.Helper()
	wait.Until(t, 10*time.Second, "every partition committed up to its head", func() bool {
		gs, ok, err := s.GroupState(group)
		if err != nil || !ok {
			return false
		}
		for _, a := range gs.Partitions {
			head, err := s.Head(a.Partition)
			if err != nil || a.Committed != head {
				return false
			}
		}
		return true
	})
	gs, _, _ := s.GroupState(group)
	for _, a := range gs.Partitions {
		require.Empty(t, a.Parked, "partition %d", a.Partition)
	}
}

// A member holding events in both its partitions gives one partition back
// when a second member joins (its handler's ctx is cancelled) and the
// other when it stops: the second member handles every event, none is
// parked, none skipped, and stopping does not wait for the handler's
// events to be handled.
func TestGroupHandsBackEventsInHand(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(2)).Node(0)
	ctx := context.Background()
	holding := make(chan eventstore.Partition, 16)
	var cancelled atomic.Int32
	hold := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		holding <- ev.Partition
		<-ctx.Done()
		cancelled.Add(1)
		return ctx.Err()
	}
	m1 := startMember(t, s, "m1", hold, groupOptions(), nil)
	waitOwners(t, s, "m1")
	for _, p := range []eventstore.Partition{0, 1} {
		for v := 0; v < 3; v++ {
			_, err := s.Append(ctx, streamIn(s, p), eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
			require.NoError(t, err)
		}
	}
	held := map[eventstore.Partition]bool{}
	for len(held) < 2 {
		select {
		case p := <-holding:
			held[p] = true
		case <-time.After(10 * time.Second):
			t.Fatal("m1 never held events of both partitions")
		}
	}

	sn := newSeen()
	startMember(t, s, "m2", sn.handler, groupOptions(), nil)
	waitOwners(t, s, "m1", "m2")
	wait.Until(t, 10*time.Second, "m2 handles the 3 events of the partition m1 gave back", func() bool { return sn.distinct() == 3 })
	require.Equal(t, int32(1), cancelled.Load(), "the revoked partition's handler was cancelled")

	start := time.Now()
	m1.stop()
	stopped := time.Since(start)
	t.Logf("m1 stopped in %v holding events", stopped)
	require.Less(t, stopped, 2*groupOptions().SessionTimeout, "stop waits for neither the events in hand nor the session")
	require.Equal(t, int32(2), cancelled.Load())
	wait.Until(t, 10*time.Second, "m2 handles all 6 events", func() bool { return sn.distinct() == 6 })
	requireAllCommitted(t, s, "workers")
}

// A handler that fails with Retry errors for 3 s parks nothing: each
// partition's events are all handled, once each and in offset order, when
// it recovers, though MaxAttempts is 3 and retries come every few ms.
func TestGroupTransientFailureRetriesWithoutParking(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(2)).Node(0)
	ctx := context.Background()
	var mu sync.Mutex
	order := map[eventstore.Partition][]uint64{}
	var failures atomic.Int64
	downUntil := time.Now().Add(3 * time.Second)
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if time.Now().Before(downUntil) {
			failures.Add(1)
			return Retry(errors.New("dependency restarting"))
		}
		mu.Lock()
		order[ev.Partition] = append(order[ev.Partition], ev.Offset)
		mu.Unlock()
		return nil
	}
	startMember(t, s, "m1", h, groupOptions(), nil)
	waitOwners(t, s, "m1")
	streams := []string{streamIn(s, 0), streamIn(s, 1)}
	for i := 0; i < 20; i++ {
		_, err := s.Append(ctx, streams[i%2], eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
		require.NoError(t, err)
	}
	requireAllCommitted(t, s, "workers")
	require.False(t, time.Now().Before(downUntil))
	mu.Lock()
	defer mu.Unlock()
	for p := range eventstore.Partition(2) {
		head, err := s.Head(p)
		require.NoError(t, err)
		want := make([]uint64, head)
		for i := range want {
			want[i] = uint64(i)
		}
		require.Equal(t, want, order[p], "partition %d: every event once, in order", p)
	}
	t.Logf("%d transient failures, none parked", failures.Load())
	require.Greater(t, failures.Load(), int64(3*groupOptions().MaxAttempts))
}

// A member whose handler keeps asking to retry stops promptly, and
// leaves the event uncommitted and unparked.
func TestGroupStopsPromptlyWhileRetrying(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(1)).Node(0)
	var calls atomic.Int64
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		calls.Add(1)
		return Retry(errors.New("not yet"))
	}
	opt := groupOptions()
	opt.Backoff, opt.MaxBackoff = 50*time.Millisecond, time.Second
	m := startMember(t, s, "m1", h, opt, nil)
	waitOwners(t, s, "m1")
	_, err := s.Append(context.Background(), "acct-1", eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	wait.Until(t, 10*time.Second, "the handler retried", func() bool { return calls.Load() >= 3 })
	start := time.Now()
	m.stop()
	t.Logf("stopped in %v while retrying", time.Since(start))
	require.Less(t, time.Since(start), opt.SessionTimeout)
	gs, _, err := s.GroupState("workers")
	require.NoError(t, err)
	require.Zero(t, gs.Partitions[0].Committed)
	require.Empty(t, gs.Partitions[0].Parked)
}

// Retry errors do not count toward MaxAttempts, and are parked once they
// have lasted MaxRetryTime; plain errors are parked after MaxAttempts.
func TestCoreRetryBoundedByMaxRetryTime(t *testing.T) {
	ev := eventstore.Event{Partition: 0, Offset: 0, Stream: "a", Type: "Tick"}
	for _, tc := range []struct {
		name   string
		fails  int // calls that fail before one succeeds (-1: never)
		retry  bool
		parked bool
	}{
		{"transient then fine", 10, true, false},
		{"transient for ever", -1, true, true},
		{"plain", 10, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
				calls++
				if tc.fails >= 0 && calls > tc.fails {
					return nil
				}
				if tc.retry {
					return Retry(errors.New("later"))
				}
				return errors.New("poison")
			}
			opt := fastOptions()
			opt.defaults()
			opt.MaxRetryTime = 100 * time.Millisecond
			opt.Backoff, opt.MaxBackoff = time.Millisecond, time.Millisecond
			opt.Logger = slog.New(slog.DiscardHandler)
			c := &core{name: "test", h: h, opt: &opt, hooks: &testHooks{}}
			c.mu.Lock()
			parks, err := c.handleBatchLocked(context.Background(), []eventstore.Event{ev}, 1)
			c.mu.Unlock()
			require.NoError(t, err)
			require.Equal(t, tc.parked, len(parks) == 1)
			if tc.name == "plain" {
				require.Equal(t, opt.MaxAttempts, calls)
				require.Equal(t, opt.MaxAttempts, parks[0].Attempts)
			} else {
				require.Greater(t, calls, opt.MaxAttempts)
			}
		})
	}
	require.Nil(t, Retry(nil))
	require.ErrorIs(t, Retry(context.Canceled), context.Canceled)
	require.True(t, isRetry(fmt.Errorf("wrapped: %w", Retry(errors.New("x")))))
}
