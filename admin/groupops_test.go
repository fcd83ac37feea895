package admin_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/systemtest/wait"
)

// TestAdminGroupResetAndDelete: reset and delete are refused while the
// group has a live member (409 naming it), refuse bad bodies with a 400
// that changes nothing, move every partition where asked, and a deleted
// group is gone (404).
func TestAdminGroupResetAndDelete(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	for i := range 8 {
		n.appendEvents(t, fmt.Sprintf("s-%d", i), 2)
	}
	mid := time.Now()
	for i := range 8 {
		n.appendEvents(t, fmt.Sprintf("s-%d", i), 1)
	}
	// A member that has handled everything.
	heads, _, _ := n.joinCaughtUp(t, "g", "m1")
	committed := func() []uint64 {
		st, ok, err := n.store.GroupState("g")
		require.NoError(t, err)
		require.True(t, ok)
		out := make([]uint64, len(st.Partitions))
		for i, a := range st.Partitions {
			out[i] = a.Committed
		}
		return out
	}

	var active admin.GroupActiveError
	require.Equal(t, http.StatusConflict, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "earliest"}, &active))
	require.Equal(t, "group_active", active.Code)
	require.Equal(t, []string{"m1"}, active.Members)
	require.Contains(t, active.Error, `consumer group "g" has live members (m1)`)
	active = admin.GroupActiveError{}
	require.Equal(t, http.StatusConflict, n.call(t, "DELETE", "/admin/groups/g", nil, &active))
	require.Equal(t, "group_active", active.Code)
	require.Contains(t, active.Error, "then delete it again")
	require.Equal(t, heads, committed())

	require.NoError(t, n.store.LeaveGroup(ctx, "g", "m1"))
	for _, c := range []struct{ body, want string }{
		{`{bad`, "request body"},
		{`{"to": "soon"}`, `"soon" is not earliest, latest, time or offsets`},
		{`{}`, `"to" is required`},
		{`{"to": "time"}`, `needs "time"`},
		{`{"to": "time", "time": "yesterday"}`, "request body"},
		{`{"to": "earliest", "time": "2026-01-02T03:04:05Z"}`, `"time" goes only with`},
		{`{"to": "latest", "offsets": [0, 0, 0, 0]}`, `"offsets" goes only with`},
		{`{"to": "offsets", "offsets": [0]}`, "give one per partition"},
		{`{"to": "offsets", "offsets": [1000000, 0, 0, 0]}`, "beyond its end"},
		{`{"to": "earliest", "force": "yes"}`, "request body"},
		{`{"to": "earliest", "forced": true}`, "unknown field"},
		{`{"to": "earliest", "offsets": [` + strings.Repeat("0,", 40000) + `0]}`, "request body too large"},
	} {
		var e admin.Error
		require.Equal(t, http.StatusBadRequest, n.call(t, "POST", "/admin/groups/g/reset", rawBody(c.body), &e), c.body)
		require.Equal(t, "bad_request", e.Code)
		require.Contains(t, e.Error, c.want, c.body)
	}
	require.Equal(t, heads, committed(), "a refused reset changes nothing")

	var e admin.Error
	require.Equal(t, http.StatusNotFound, n.call(t, "POST", "/admin/groups/nope/reset", admin.ResetRequest{To: "earliest"}, &e))
	require.Equal(t, `consumer group "nope" does not exist`, e.Error)

	var g admin.Group
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "earliest"}, &g))
	require.Equal(t, make([]uint64, len(heads)), committed())
	require.Equal(t, uint64(24), g.Lag, "every event to handle again")
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "latest"}, &g))
	require.Equal(t, heads, committed())
	require.Zero(t, g.Lag)
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "time", Time: &mid}, &g))
	require.Equal(t, uint64(8), g.Lag, "the events appended after mid")
	offs := []uint64{1, 0, 0, 0}
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "offsets", Offsets: offs}, &g))
	require.Equal(t, offs, committed())

	var del admin.GroupDeleted
	require.Equal(t, http.StatusOK, n.call(t, "DELETE", "/admin/groups/g", nil, &del))
	require.Equal(t, admin.GroupDeleted{Group: "g", Action: "deleted"}, del)
	require.Equal(t, http.StatusNotFound, n.call(t, "GET", "/admin/groups/g", nil, &e))
	require.Equal(t, http.StatusNotFound, n.call(t, "DELETE", "/admin/groups/g", nil, &e))
}

// A forced reset of a group with live members fences them: the reset
// applies at once, a member's next commit at its old generation is refused
// as stale and its heartbeat as unknown; a member that joins again resumes
// from the reset offsets, and a projection.Group member does so on its
// own, handling every event again.
func TestAdminForcedResetFencesLiveMembers(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	for i := range 10 {
		n.appendEvents(t, fmt.Sprintf("s-%d", i), 3)
	}
	// A member driven by hand, up to the heads.
	heads, gs, commits := n.joinCaughtUp(t, "g", "m1")
	total := 0
	for _, h := range heads {
		total += int(h)
	}

	var active admin.GroupActiveError
	require.Equal(t, http.StatusConflict, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "earliest"}, &active))
	require.Contains(t, active.Error, "--force")
	var g admin.Group
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/groups/g/reset", admin.ResetRequest{To: "earliest", Force: true}, &g))
	require.Empty(t, g.Members, "the live member is fenced out")
	require.Greater(t, g.Generation, gs.Generation)
	require.Equal(t, uint64(total), g.Lag)

	// Its next commit, at the generation it holds, is refused.
	_, err := n.store.CommitOffsets(ctx, "g", "m1", commits)
	var stale *eventstore.StaleGenerationError
	require.ErrorAs(t, err, &stale)
	require.Equal(t, gs.Partitions[0].Generation, stale.Generation)
	_, err = n.store.Heartbeat(ctx, "g", "m1", nil)
	require.ErrorIs(t, err, eventstore.ErrUnknownMember)
	// Joining again, it is granted every partition from the reset offsets.
	gs2, err := n.store.JoinGroup(ctx, "g", "m1", time.Minute)
	require.NoError(t, err)
	for _, a := range gs2.Partitions {
		require.Equal(t, "m1", a.Owner)
		require.Zero(t, a.Committed)
		require.Greater(t, a.Generation, gs.Partitions[a.Partition].Generation)
	}
	first := eventstore.OffsetCommit{Partition: gs2.Partitions[0].Partition, Generation: gs2.Partitions[0].Generation, Offset: 1}
	_, err = n.store.CommitOffsets(ctx, "g", "m1", []eventstore.OffsetCommit{first})
	require.NoError(t, err)

	// A projection.Group member that handled everything handles every
	// event again after a forced reset, without being restarted.
	var mu sync.Mutex
	seen := map[string]int{}
	handler := func(_ context.Context, _ *sql.Tx, ev eventstore.Event) error {
		mu.Lock()
		seen[ev.ID.String()]++
		mu.Unlock()
		return nil
	}
	gctx, cancel := context.WithCancel(ctx)
	member := projection.NewGroup(n.store, "mailer", "w1", handler, projection.GroupOptions{SessionTimeout: 3 * time.Second})
	done := make(chan error, 1)
	go func() { done <- member.Run(gctx) }()
	t.Cleanup(func() { cancel(); <-done })
	handledAtLeast := func(k int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != total {
				return false
			}
			for _, c := range seen {
				if c < k {
					return false
				}
			}
			return true
		}
	}
	wait.Until(t, 30*time.Second, "every event handled once", handledAtLeast(1))
	wait.Until(t, 30*time.Second, "the group committed everything", func() bool {
		var g admin.Group
		return n.call(t, "GET", "/admin/groups/mailer", nil, &g) == http.StatusOK && g.Lag == 0 && len(g.Members) == 1
	})
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/groups/mailer/reset", admin.ResetRequest{To: "earliest", Force: true}, &g))
	wait.Until(t, 30*time.Second, "every event handled again after the forced reset", handledAtLeast(2))
	wait.Until(t, 30*time.Second, "the member rejoined and committed everything", func() bool {
		var g admin.Group
		return n.call(t, "GET", "/admin/groups/mailer", nil, &g) == http.StatusOK && g.Lag == 0 && len(g.Members) == 1
	})
	select {
	case err := <-done:
		t.Fatalf("the member stopped: %v", err)
	default:
	}
}

// joinCaughtUp joins member to group and commits every partition up to
// its head, as a member that has handled everything; it returns the heads,
// the group state the join answered and the commits it made.
func (n *node) joinCaughtUp(t *testing.T, group, member string) ([]uint64, eventstore.ConsumerGroupState, []eventstore.OffsetCommit) {
	t.Helper()
	ctx := context.Background()
	heads := make([]uint64, n.store.Partitions())
	for p := range heads {
		h, err := n.store.Head(eventstore.Partition(p))
		require.NoError(t, err)
		heads[p] = h
	}
	gs, err := n.store.JoinGroup(ctx, group, member, time.Minute)
	require.NoError(t, err)
	var commits []eventstore.OffsetCommit
	for _, a := range gs.Partitions {
		commits = append(commits, eventstore.OffsetCommit{Partition: a.Partition, Generation: a.Generation, Offset: heads[a.Partition]})
	}
	_, err = n.store.CommitOffsets(ctx, group, member, commits)
	require.NoError(t, err)
	return heads, gs, commits
}
