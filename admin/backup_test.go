package admin_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/raftlog"
)

func TestAdminBackupAndKeys(t *testing.T) {
	n := newNode(t)
	n.appendEvents(t, "order-1", 20)
	for _, path := range []string{"/admin/backup", "/admin/keys"} {
		resp, err := http.Get(n.srv.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
	}
	req, _ := http.NewRequest("GET", n.srv.URL+"/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
	info, err := raftlog.ReadBackupInfo(bytes.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, n.store.Log().ClusterID(), info.ClusterID)
	require.Equal(t, []string{"$key-"}, info.ExcludedKeyPrefixes)
	var heads uint64
	for _, h := range info.Heads {
		heads += h
	}
	require.Equal(t, uint64(20), heads)

	// A store without encryption has no keys to export, and takes none.
	var e admin.Error
	require.Equal(t, http.StatusBadRequest, n.call(t, "POST", "/admin/keys", rawBody(`{"subject":"user-1","version":1,"key":"AAAA"}`), &e))
	require.Equal(t, "bad_request", e.Code)
	require.Contains(t, e.Error, "Encrypt")
}
