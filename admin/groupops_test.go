package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
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
	heads := make([]uint64, n.store.Partitions())
	for p := range heads {
		h, err := n.store.Head(eventstore.Partition(p))
		require.NoError(t, err)
		heads[p] = h
	}
	// A member that has handled everything.
	gs, err := n.store.JoinGroup(ctx, "g", "m1", time.Minute)
	require.NoError(t, err)
	var commits []eventstore.OffsetCommit
	for _, a := range gs.Partitions {
		commits = append(commits, eventstore.OffsetCommit{Partition: a.Partition, Generation: a.Generation, Offset: heads[a.Partition]})
	}
	_, err = n.store.CommitOffsets(ctx, "g", "m1", commits)
	require.NoError(t, err)
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
		{`{"to": "earliest", "force": true}`, "unknown field"},
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
