package admin_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/wait"
)

// The skip endpoints answer as the retry ones: a projection's parked
// event is dropped at once ("skipped", with what remains parked) and
// counted in its status; a group's is asked of its owner
// ("skip_requested"), shown as skipping until done, then counted in the
// group's skipped; what is not parked is a 404.
func TestAdminSkipParked(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := eventstore.Open(ctx, t.TempDir(), eventstore.Partitions(2))
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	db, err := sqlite.Open(ctx, t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	poison := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "poison-1" {
			return errors.New("cannot handle")
		}
		return nil
	}
	opt := projection.Options{MaxAttempts: 1}
	proj := projection.NewLocal(store, db, "view", poison, opt)
	grp := projection.NewGroup(store, "mailer", "m1", poison, projection.GroupOptions{Options: opt, SessionTimeout: 1500 * time.Millisecond})
	done := make(chan struct{}, 2)
	go func() { proj.Run(ctx); done <- struct{}{} }()
	go func() { grp.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	h, err := admin.New(admin.Config{Store: store, Projections: map[string]*projection.Local{"view": proj}, Token: token, Context: ctx})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	n := &node{store: store, proj: proj, srv: srv}
	n.appendEvents(t, "poison-1", 2)

	var pl, gl admin.ParkedList
	wait.Until(t, 30*time.Second, "both events parked by both consumers", func() bool {
		return n.call(t, "GET", "/admin/projections/view/parked", nil, &pl) == http.StatusOK && len(pl.Parked) == 2 &&
			n.call(t, "GET", "/admin/groups/mailer/parked", nil, &gl) == http.StatusOK && len(gl.Parked) == 2
	})

	first := pl.Parked[0]
	path := fmt.Sprintf("/admin/projections/view/parked/%d/%d/skip", first.Partition, first.Offset)
	var res admin.Retry
	require.Equal(t, http.StatusOK, n.call(t, "POST", path, nil, &res))
	require.Equal(t, "skipped", res.Action)
	require.Equal(t, 1, *res.Remaining)
	var e admin.Error
	require.Equal(t, http.StatusNotFound, n.call(t, "POST", path, nil, &e), "skipped already")
	var p admin.Projection
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/projections/view", nil, &p))
	require.Equal(t, uint64(1), p.Skipped)
	require.Equal(t, 1, p.Parked)

	first = gl.Parked[0]
	path = fmt.Sprintf("/admin/groups/mailer/parked/%d/%d/skip", first.Partition, first.Offset)
	res = admin.Retry{}
	require.Equal(t, http.StatusOK, n.call(t, "POST", path, nil, &res))
	require.Equal(t, admin.Retry{Partition: first.Partition, Offset: first.Offset, Action: "skip_requested"}, res)
	wait.Until(t, 30*time.Second, "the owner skipped it", func() bool {
		var g admin.Group
		return n.call(t, "GET", "/admin/groups/mailer", nil, &g) == http.StatusOK && g.Skipped == 1 && g.Parked == 1
	})
	require.Equal(t, http.StatusNotFound, n.call(t, "POST", path, nil, &e))
	require.Equal(t, http.StatusNotFound, n.call(t, "POST", "/admin/groups/nope/parked/0/0/skip", nil, &e))
	require.Equal(t, http.StatusBadRequest, n.call(t, "POST", "/admin/groups/mailer/parked/0/x/skip", nil, &e))
}
