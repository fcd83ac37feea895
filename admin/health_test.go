package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
)

// TestReadyzReportsDamage: a node whose state files are found damaged is
// not ready, and /readyz says which shard and what to do.
func TestReadyzReportsDamage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := eventstore.Open(ctx, dir, eventstore.Partitions(1))
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		_, err := store.Append(ctx, fmt.Sprintf("s-%d", i), eventstore.Any, []eventstore.EventData{{Type: "T", Data: []byte(`{"n":1}`)}})
		require.NoError(t, err)
	}
	require.NoError(t, store.Close()) // a clean close puts every record in the segment

	seg := filepath.Join(dir, "g0", "p0", fmt.Sprintf("%020d.seg", 0))
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff
	require.NoError(t, os.WriteFile(seg, b, 0o600))

	// No scrub: its pass at start would find the damage at once; here a
	// read finds it.
	store, err = eventstore.Open(ctx, dir, eventstore.Partitions(1),
		eventstore.LogConfig(func(c *raftlog.Config) { c.ScrubBytesPerSecond = -1 }))
	require.NoError(t, err)
	defer store.Close()
	srv := httptest.NewServer(admin.HealthHandler(store))
	defer srv.Close()
	get := func() (int, admin.Health) {
		resp, err := http.Get(srv.URL + "/readyz")
		require.NoError(t, err)
		defer resp.Body.Close()
		var h admin.Health
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
		return resp.StatusCode, h
	}
	code, _ := get()
	require.Equal(t, http.StatusOK, code, "the damage is not found yet: nothing read it")

	_, _, err = store.ReadPartition(ctx, 0, 0, 100)
	require.ErrorIs(t, err, raftlog.ErrCorrupt)
	code, h := get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Len(t, h.Problems, 1)
	require.Contains(t, h.Problems[0], "damaged")
	require.Contains(t, h.Shards[0].Damage, ".seg")
}
