package schema_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/schema"
	"github.com/esraft/esraft/systemtest/wait"
)

// dump renders a registry view for comparison between nodes.
func dump(t testing.TB, r *schema.Registry) string {
	t.Helper()
	out := fmt.Sprintf("applied %d\n", r.Applied())
	for _, s := range r.Subjects() {
		mode, set := r.Compatibility(s)
		out += fmt.Sprintf("%s %s %v\n", s, mode, set)
		vs, err := r.Versions(s)
		require.NoError(t, err)
		for _, n := range vs {
			v, err := r.Get(s, n)
			require.NoError(t, err)
			out += fmt.Sprintf("  v%d id %d %s\n", v.Version, v.ID, v.Schema)
		}
	}
	return out
}

// openRegistries opens a registry on every node of c.
func openRegistries(t *testing.T, c eventstoretest.Cluster) []*schema.Registry {
	t.Helper()
	regs := make([]*schema.Registry, c.Size)
	for i := range regs {
		regs[i] = openRegistry(t, c.Node(i))
	}
	return regs
}

// requireSameEverywhere waits until every running node's view equals the
// first one's.
func requireSameEverywhere(t *testing.T, regs []*schema.Registry) string {
	t.Helper()
	var want string
	wait.Until(t, 20*time.Second, "identical registries on every node", func() bool {
		want = dump(t, regs[0])
		for _, r := range regs[1:] {
			if dump(t, r) != want {
				return false
			}
		}
		return true
	})
	return want
}

func TestClusterValidatesOnLeaderAndFollower(t *testing.T) {
	ctx := ctxT(t)
	c := eventstoretest.StartCluster(t, 3)
	li := c.Leader(t)
	fi := (li + 1) % 3
	regs := openRegistries(t, c)
	// Registered through a follower: forwarded to the leader like any append.
	_, err := regs[fi].Register(ctx, "OrderPlaced", []byte(placedV1))
	require.NoError(t, err)
	requireSameEverywhere(t, regs)

	for _, i := range []int{fi, li} {
		stream := fmt.Sprintf("order-%d", i)
		_, err := c.Node(i).Append(ctx, stream, eventstore.Any, append(
			event("OrderPlaced", `{"order_id":"a","qty":1}`), event("OrderPlaced", `{"order_id":"b","qty":-1}`)...))
		var ie *schema.InvalidEventError
		require.ErrorAs(t, err, &ie, "node %d", i)
		require.Equal(t, "/qty", ie.Path)
		require.Equal(t, 1, ie.Version)
		require.Equal(t, "OrderPlaced", ie.Type)
		require.Contains(t, err.Error(), `"/qty"`)
		require.NoError(t, c.Node(i).Barrier(ctx))
		for n := 0; n < 3; n++ {
			info, err := c.Node(n).Stream(ctx, stream)
			require.NoError(t, err)
			require.Zero(t, info.Version, "node %d holds events of a refused append made on node %d", n, i)
		}
		res, err := c.Node(i).Append(ctx, stream, eventstore.NoStream, event("OrderPlaced", `{"order_id":"a","qty":1}`))
		require.NoError(t, err)
		other := c.Node((i + 2) % 3)
		require.NoError(t, other.Sync(ctx, res.Position))
		evs, err := other.ReadStream(ctx, stream, 1, 10)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, 1, evs[0].Metadata.SchemaVersion)
	}
}

// TestConcurrentRegistrationsCannotBothWin: two nodes register different
// second versions at once, each compatible with version 1 but not with the
// other (closed content model: each adds a property the other refuses).
// One wins; the other is checked again against it and refused.
func TestConcurrentRegistrationsCannotBothWin(t *testing.T) {
	ctx := ctxT(t)
	c := eventstoretest.StartCluster(t, 3)
	regs := openRegistries(t, c)
	base := `{"type":"object","properties":{"a":{"type":"string"}%s},"additionalProperties":false}`
	_, err := regs[0].Register(ctx, "E", []byte(fmt.Sprintf(base, "")))
	require.NoError(t, err)
	for round := 0; round < 3; round++ {
		subj := fmt.Sprintf("E%d", round)
		_, err := regs[0].Register(ctx, subj, []byte(fmt.Sprintf(base, "")))
		require.NoError(t, err)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k := 0; k < 2; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[k] = regs[k+1].Register(ctx, subj, []byte(fmt.Sprintf(base, fmt.Sprintf(`,"p%d":{"type":"integer"}`, k))))
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
				continue
			}
			var ie *schema.IncompatibleError
			require.ErrorAs(t, err, &ie)
			require.Equal(t, 2, ie.Incompatibilities[0].Version, "the loser is checked against the winner")
		}
		require.Equal(t, 1, won, "round %d: %v", round, errs)
		require.NoError(t, regs[0].Sync(ctx))
		vs, err := regs[0].Versions(subj)
		require.NoError(t, err)
		require.Equal(t, []int{1, 2}, vs)
	}
	requireSameEverywhere(t, regs)
}

// raftEvents counts raft's log lines that show compaction and snapshot
// installs, per node.
type raftEvents struct {
	mu        sync.Mutex
	compacted map[string]uint64 // node -> highest index compacted away
	installs  map[string]int
}

type raftEventsHandler struct {
	ev   *raftEvents
	node string
}

func (h raftEventsHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h raftEventsHandler) WithGroup(string) slog.Handler            { return h }
func (h raftEventsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		if a.Key == "node" {
			h.node = a.Value.String()
		}
	}
	return h
}

func (h raftEventsHandler) Handle(_ context.Context, r slog.Record) error {
	h.ev.mu.Lock()
	defer h.ev.mu.Unlock()
	switch r.Message {
	case "compacting logs":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "to" {
				if to := a.Value.Any(); to != nil {
					var n uint64
					fmt.Sscan(fmt.Sprint(to), &n)
					h.ev.compacted[h.node] = max(h.ev.compacted[h.node], n)
				}
			}
			return true
		})
	case "Installed remote snapshot":
		h.ev.installs[h.node]++
	}
	return nil
}

func (e *raftEvents) get(node string) (uint64, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.compacted[node], e.installs[node]
}

// TestRegistrySurvivesRestartAndSnapshotInstall: a follower stopped while
// the registry changes and the others compact their raft logs past what
// it holds comes back by installing a snapshot, and its registry is the
// same as theirs; every node's registry survives a restart.
func TestRegistrySurvivesRestartAndSnapshotInstall(t *testing.T) {
	ctx := ctxT(t)
	ev := &raftEvents{compacted: map[string]uint64{}, installs: map[string]int{}}
	c := eventstoretest.StartCluster(t, 3,
		eventstore.Logger(slog.New(raftEventsHandler{ev: ev})),
		eventstore.LogConfig(func(cfg *raftlog.Config) {
			cfg.LogStore = raftlog.LogStoreBolt // compacts entry by entry
			cfg.SnapshotThreshold = 16
			cfg.TrailingLogs = 4
			cfg.SnapshotInterval = 50 * time.Millisecond
		}))
	li := c.Leader(t)
	fi := (li + 1) % 3
	regs := openRegistries(t, c)
	_, err := regs[li].Register(ctx, "OrderPlaced", []byte(placedV1))
	require.NoError(t, err)
	requireSameEverywhere(t, regs)

	fid := c.Node(fi).Log().Status().NodeID
	last := c.Node(fi).Log().Status().Shards[0].LastIndex
	require.NoError(t, regs[fi].Close())
	c.Stop(t, fi)

	// Registry changes and other traffic while the follower is away.
	_, err = regs[li].Register(ctx, "OrderPlaced", []byte(placedV2))
	require.NoError(t, err)
	require.NoError(t, regs[li].SetCompatibility(ctx, "OrderPlaced", schema.FullTransitive))
	_, err = regs[li].Register(ctx, "OrderShipped", []byte(`{"type":"object"}`))
	require.NoError(t, err)
	running := []int{li, (li + 2) % 3}
	ids := []string{c.Node(running[0]).Log().Status().NodeID, c.Node(running[1]).Log().Status().NodeID}
	n := 0
	wait.Until(t, 30*time.Second, "the running nodes compact their logs past the stopped follower's last entry", func() bool {
		_, err := c.Node(li).Append(ctx, fmt.Sprintf("order-x%d", n), eventstore.Any, event("OrderPlaced", `{"order_id":"x","qty":1}`))
		require.NoError(t, err)
		n++
		a, _ := ev.get(ids[0])
		b, _ := ev.get(ids[1])
		return a > last+1 && b > last+1
	})

	c.Restart(t, fi)
	wait.Until(t, 30*time.Second, "the follower installs a snapshot", func() bool {
		_, installs := ev.get(fid)
		return installs > 0
	})
	regs[fi] = openRegistry(t, c.Node(fi))
	before := requireSameEverywhere(t, regs)
	require.Contains(t, before, "OrderShipped")
	require.Contains(t, before, "OrderPlaced FULL_TRANSITIVE true")

	// And every node restarted holds the same registry again.
	for i := range regs {
		require.NoError(t, regs[i].Close())
		c.Stop(t, i)
	}
	for i := range regs {
		c.Restart(t, i)
	}
	for i := range regs {
		regs[i] = openRegistry(t, c.Node(i))
	}
	require.Equal(t, before, requireSameEverywhere(t, regs))
}
