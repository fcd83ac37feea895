package admin_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
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

// A shredded event reads through the API with no data and the reason.
func TestAdminShreddedEvent(t *testing.T) {
	ctx := context.Background()
	store, err := eventstore.Open(ctx, t.TempDir(), eventstore.Encrypt(eventstore.Encryption{
		Subject: eventstore.SubjectPerStream("user"), KEK: bytes.Repeat([]byte{4}, 32)}))
	require.NoError(t, err)
	defer store.Close()
	h, err := admin.New(admin.Config{Store: store, Token: token})
	require.NoError(t, err)
	n := &node{store: store, srv: httptest.NewServer(h)}
	defer n.srv.Close()
	_, err = store.Append(ctx, "user-1", eventstore.NoStream, []eventstore.EventData{{Type: "Registered", Data: []byte(`{"name":"ann"}`)}})
	require.NoError(t, err)
	var page admin.EventPage
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/user-1/events", nil, &page))
	require.JSONEq(t, `{"name":"ann"}`, string(page.Events[0].Data))
	require.Empty(t, page.Events[0].Unreadable)
	require.NoError(t, store.Shred(ctx, "user-1"))
	var after admin.EventPage
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/user-1/events", nil, &after))
	require.Nil(t, after.Events[0].Data)
	require.Contains(t, after.Events[0].Unreadable, "shredded")
}
