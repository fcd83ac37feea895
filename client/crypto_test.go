package client_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
)

// A thin client with the nodes' Encryption seals and opens events as a
// node does, and sees a shred at once.
func TestThinClientEncryption(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enc := eventstore.Encrypt(eventstore.Encryption{Subject: eventstore.SubjectPerStream("user"), KEK: bytes.Repeat([]byte{9}, 32)})
	c := eventstoretest.StartCluster(t, 1, enc)
	node := c.Node(0)
	thin, err := client.Open(ctx, client.Config{Addrs: []string{node.Log().Addr()}, ID: "c1"}, enc)
	require.NoError(t, err)
	defer thin.Close()

	res, err := thin.Append(ctx, "user-1", eventstore.NoStream, []eventstore.EventData{{Type: "Noted", Data: []byte("secret")}})
	require.NoError(t, err)
	require.NoError(t, node.Sync(ctx, res.Position))
	for _, s := range []*eventstore.Store{thin, node} {
		evs, err := s.ReadStream(ctx, "user-1", 0, 10)
		require.NoError(t, err)
		require.Equal(t, "secret", string(evs[0].Data))
	}
	raw, err := node.Log().Read(ctx, res.Partition, res.FirstOffset, raftlog.ReadOptions{MaxRecords: 1})
	require.NoError(t, err)
	require.NotContains(t, string(raw[0].Value), "secret", "stored sealed")
	_, err = eventstore.New(node.Source()).ReadStream(ctx, "user-1", 0, 10)
	require.ErrorContains(t, err, "open the store with Encrypt", "a store without Encrypt refuses, rather than hand out sealed bytes as data")

	require.NoError(t, thin.Shred(ctx, "user-1"))
	evs, err := node.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.ErrorIs(t, evs[0].Unreadable, eventstore.ErrShredded)
	evs, err = thin.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.ErrorIs(t, evs[0].Unreadable, eventstore.ErrShredded)
}
