package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
)

// thinClients returns c with every node's store replaced by a thin client
// connected to that node first (and knowing the others): the suite runs
// against clients while its Stop and Restart act on the nodes.
func thinClients(t *testing.T, c eventstoretest.Cluster) eventstoretest.Cluster {
	t.Helper()
	addrs := make([]string, c.Size)
	for i := range addrs {
		addrs[i] = c.Node(i).Log().Addr()
	}
	clients := make([]*eventstore.Store, c.Size)
	for i := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		order := append(append([]string{}, addrs[i:]...), addrs[:i]...)
		s, err := client.Open(ctx, client.Config{Addrs: order, ID: "c" + order[0], CallTimeout: 5 * time.Second})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		clients[i] = s
	}
	var mu sync.Mutex
	thin := c
	thin.Node = func(i int) *eventstore.Store {
		mu.Lock()
		defer mu.Unlock()
		return clients[i]
	}
	return thin
}

func TestConformanceThinClientsThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster per test")
	}
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Cluster {
		return thinClients(t, eventstoretest.StartCluster(t, 3))
	})
}
