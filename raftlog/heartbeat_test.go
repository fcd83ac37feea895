package raftlog

import (
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// TestHeartbeatsReachRaftsMainLoop: a heartbeat of a newer term handled
// on the transport's goroutine races the leader loop and can make a
// deposed leader apply entries no quorum held (serialTransport, bug 16).
// The shards' transport hands heartbeats to raft's consumer channel, where
// the main loop takes them in turn; a plain NetworkTransport, the control,
// answers them on its own goroutine through the handler.
func TestHeartbeatsReachRaftsMainLoop(t *testing.T) {
	heartbeat := func(t *testing.T, receiver raft.Transport, addr raft.ServerAddress) (fastPath bool) {
		var called atomic.Bool
		receiver.SetHeartbeatHandler(func(rpc raft.RPC) {
			called.Store(true)
			rpc.Respond(&raft.AppendEntriesResponse{Term: 5, Success: true}, nil)
		})
		sender, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
		require.NoError(t, err)
		defer sender.Close()
		go func() { // the main loop's turn
			select {
			case rpc := <-receiver.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Term: 5, Success: true}, nil)
			case <-time.After(10 * time.Second):
			}
		}()
		req := raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("leader"), Addr: []byte(sender.LocalAddr())}, Term: 5}
		var resp raft.AppendEntriesResponse
		require.NoError(t, sender.AppendEntries("receiver", addr, &req, &resp))
		require.True(t, resp.Success)
		return called.Load()
	}
	newReceiver := func(t *testing.T) *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
		require.NoError(t, err)
		t.Cleanup(func() { tr.Close() })
		return tr
	}

	plain := newReceiver(t)
	require.True(t, heartbeat(t, plain, plain.LocalAddr()), "the control: a plain transport answers heartbeats on its own goroutine")
	serial := newReceiver(t)
	require.False(t, heartbeat(t, serialTransport{serial}, serial.LocalAddr()), "the shards' transport hands heartbeats to raft's main loop")

	// And the shards of a cluster run on it.
	c := newCluster(t, 3, nil)
	for i := range 3 {
		s, err := c.node(i).shard(0)
		require.NoError(t, err)
		require.IsType(t, serialTransport{}, s.transport)
	}
}
