package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/faulttest"
	"github.com/esraft/esraft/systemtest/faulttest/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// The tests here run the nodes as separate processes
// (systemtest/faultnode, behind faulttest's proxy, killed with SIGKILL)
// and the thin clients in this process or, for consumer group members, in
// processes of their own (faultnode -client).

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// nodeBinary builds systemtest/faultnode once per test binary.
func nodeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "esraft-client-test")
		if err != nil {
			buildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binary, buildErr = faulttest.BuildNode(ctx, dir)
	})
	require.NoError(t, buildErr)
	return binary
}

// startProcesses starts a 3-node cluster of processes and stops it when t
// ends.
func startProcesses(t *testing.T) *faulttest.Cluster {
	t.Helper()
	c, err := faulttest.NewCluster(faulttest.ClusterConfig{
		Binary: nodeBinary(t), Dir: t.TempDir(), Nodes: 3, Partitions: 8, Groups: 1,
		Heartbeat: 400 * time.Millisecond, Election: 400 * time.Millisecond, Lease: 200 * time.Millisecond,
	}, t.Logf, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	errs := make([]error, c.Size())
	for i := range c.Size() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			errs[i] = c.Start(ctx, i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	return c
}

// addrsFrom lists the cluster's (proxy) addresses, node first first.
func addrsFrom(c *faulttest.Cluster, first int) []string {
	var out []string
	for i := range c.Size() {
		out = append(out, c.Proxy.Addr((first+i)%c.Size()))
	}
	return out
}

func openClient(t *testing.T, addrs []string, id string) *eventstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := client.Open(ctx, client.Config{Addrs: addrs, ID: id, CallTimeout: 3 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// processLeader waits until the running nodes agree on a leader of shard 0
// and returns its index.
func processLeader(t testing.TB, c *faulttest.Cluster) int {
	t.Helper()
	found := -1
	wait.Until(t, 30*time.Second, "a leader", func() bool {
		found = -1
		leaderID := ""
		for i := range c.Size() {
			addr := c.Node(i).HTTP()
			if addr == "" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				return false
			}
			var st wire.StatusResponse
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			cancel()
			if err != nil || len(st.Groups) == 0 {
				return false
			}
			g := st.Groups[0]
			if g.LeaderID == "" || (leaderID != "" && g.LeaderID != leaderID) {
				return false
			}
			leaderID = g.LeaderID
			if g.State == "Leader" {
				found = i
			}
		}
		return found >= 0
	})
	return found
}

// processCluster is the conformance suite's view of a cluster of node
// processes: Leader, Stop (SIGKILL) and Restart count the node processes;
// Node(i) is a thin client connected first to node (i+shift)%3, the others
// following in order; ConnectedTo maps the node a client uses now back to
// its index.
func processCluster(t *testing.T, shift int) eventstoretest.Cluster {
	c := startProcesses(t)
	stores := make([]*eventstore.Store, c.Size())
	for i := range stores {
		first := (i + shift) % c.Size()
		stores[i] = openClient(t, addrsFrom(c, first), fmt.Sprintf("client%d-on-node%d", i, first))
	}
	return eventstoretest.Cluster{
		Size:   c.Size(),
		Node:   func(i int) *eventstore.Store { return stores[i] },
		Leader: func(t testing.TB) int { return processLeader(t, c) },
		Stop: func(t testing.TB, i int) {
			require.NoError(t, c.Kill(i))
		},
		Restart: func(t testing.TB, i int) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			require.NoError(t, c.Start(ctx, i))
		},
		ConnectedTo: func(i int) int {
			inUse := stores[i].Source().(*raftlog.Remote).Addrs()[0]
			for n := range c.Size() {
				if c.Proxy.Addr(n) == inUse {
					return n
				}
			}
			return -1
		},
	}
}

// TestConformanceThinClientsProcesses runs the conformance suite against
// thin clients of a 3-node cluster of processes, whose nodes it stops
// with SIGKILL (the leader, and every node in turn), twice: the suite's
// SubscribeAcrossLeaderChange kills the leader L while Node(L+1)
// subscribes and Node(L+2) appends, so connecting Node(i) to node i+2
// puts the subscriber's client on the killed node, and to node i+1 the
// writer's; the suite checks that the client fails over.
func TestConformanceThinClientsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-process cluster per test")
	}
	for _, m := range []struct {
		name  string
		shift int
	}{
		{"SubscriberOnKilledNode", 2},
		{"WriterOnKilledNode", 1},
	} {
		t.Run(m.name, func(t *testing.T) {
			eventstoretest.Run(t, func(t *testing.T) eventstoretest.Cluster { return processCluster(t, m.shift) })
		})
	}
}

// TestThinClientSurvivesItsNodeKilled appends and subscribes through
// thin clients connected to one node, SIGKILLs that node (the leader
// first, then, once it is back, the node the clients moved to), and checks
// that every acknowledged event is delivered to the subscriber exactly
// once, in partition order, and reads back from any client.
func TestThinClientSurvivesItsNodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-process cluster")
	}
	c := startProcesses(t)
	first := processLeader(t, c)
	w := openClient(t, addrsFrom(c, first), "writer")
	r := openClient(t, addrsFrom(c, first), "reader")
	sub, err := r.Subscribe(context.Background(), eventstore.SubscribeOptions{})
	require.NoError(t, err)
	defer sub.Close()

	const total = 300
	kills := map[int]int{100: first, 200: (first + 1) % c.Size()}
	acked := map[uuid.UUID]eventstore.AppendResult{}
	for i := range total {
		if victim, ok := kills[i]; ok {
			if i > 100 {
				// The first victim is back before the second goes, so a
				// quorum stays.
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				require.NoError(t, c.Start(ctx, first))
				cancel()
			}
			require.NoError(t, c.Kill(victim))
		}
		id := uuid.New()
		evs := []eventstore.EventData{{ID: id, Type: "Tick", Data: []byte(fmt.Sprint(i))}}
		acked[id] = appendRetrying(t, w, fmt.Sprintf("tick-%d", i%13), evs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	last := map[eventstore.Partition]uint64{}
	seen := map[uuid.UUID]bool{}
	for len(seen) < total {
		e, err := sub.Next(ctx)
		require.NoError(t, err, "after %d of %d events", len(seen), total)
		res, ok := acked[e.ID]
		require.True(t, ok, "delivered an event never acknowledged")
		require.False(t, seen[e.ID], "event %s delivered twice", e.ID)
		seen[e.ID] = true
		require.Equal(t, res.FirstOffset, e.Offset)
		if prev, ok := last[e.Partition]; ok {
			require.Greater(t, e.Offset, prev, "partition %d goes forward", e.Partition)
		}
		last[e.Partition] = e.Offset
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	_, err = sub.Next(short)
	require.ErrorIs(t, err, context.DeadlineExceeded, "nothing more")

	// Every stream reads back whole, in order, through the writer.
	for s := range 13 {
		evs, err := w.ReadStream(ctx, fmt.Sprintf("tick-%d", s), 0, total)
		require.NoError(t, err)
		for j, e := range evs {
			require.Equal(t, uint64(j+1), e.Version)
			require.Contains(t, acked, e.ID)
		}
		want := 0
		for i := range total {
			if i%13 == s {
				want++
			}
		}
		require.Len(t, evs, want, "stream tick-%d", s)
	}
}

// appendRetrying appends evs to stream, retrying with the same event IDs
// after an error that leaves the outcome open (ErrUnknownOutcome) or
// says nothing was done (ErrUnavailable), as a caller of the store must;
// any other error, or no success within a minute, fails t.
func appendRetrying(t *testing.T, s *eventstore.Store, stream string, evs []eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := s.Append(ctx, stream, eventstore.Any, evs)
		cancel()
		if err == nil {
			if attempt > 1 {
				t.Logf("append to %s acknowledged at attempt %d", stream, attempt)
			}
			return res
		}
		require.True(t, errors.Is(err, eventstore.ErrUnknownOutcome) || errors.Is(err, eventstore.ErrUnavailable), "append to %s: %v", stream, err)
		require.True(t, time.Now().Before(deadline), "append to %s: no outcome within a minute: %v", stream, err)
	}
}
