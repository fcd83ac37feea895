package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/internal/nodecert"

	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// rawJoinFrames is what an attacker with nothing but a TCP client writes
// to a cluster port: the RPC service byte, then one request frame per
// bogus voter asking to be added.
func rawJoinFrames(ids ...string) []byte {
	b := []byte{serviceRPC}
	for i, id := range ids {
		payload := wire.AppendString(nil, id)
		payload = wire.AppendString(payload, "127.0.0.1:1")
		payload = append(payload, 1) // voter
		b = binary.BigEndian.AppendUint32(b, uint32(8+1+len(payload)))
		b = binary.BigEndian.AppendUint64(b, uint64(i+1))
		b = append(b, route.MethodJoin)
		b = append(b, payload...)
	}
	return b
}

// sendRaw writes frames to addr and reads whatever comes back until the
// peer closes or a short deadline passes.
func sendRaw(t *testing.T, addr string, frames []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(frames)
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	return b
}

func servers(t *testing.T, l *Log) []string {
	t.Helper()
	var ids []string
	for _, s := range l.Status().Shards[0].Servers {
		ids = append(ids, s.ID)
	}
	return ids
}

// Today's hole, kept as the plaintext-on-loopback development mode: a raw
// client on 127.0.0.1 can still join. (The TLS and non-loopback variants
// below must refuse it.)
func TestRawJoinPlaintextLoopback(t *testing.T) {
	c := newCluster(t, 3, nil)
	li := c.leader(0)
	sendRaw(t, c.nodes[li].addr, rawJoinFrames("evil1"))
	wait.Until(t, 10*time.Second, "evil1 to be added", func() bool {
		return len(servers(t, c.node(li))) == 4
	})
}

// farListener makes every accepted connection look as if it came from
// another host (10.0.0.7), as a plaintext cluster port reachable beyond
// loopback would see an attacker.
type farListener struct{ net.Listener }

func (l farListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return farConn{c}, nil
}

type farConn struct{ net.Conn }

func (farConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 40000} }

// Without TLS, the raw join that loopback may make is refused from any
// other address, and membership is unchanged.
func TestRawJoinPlaintextNonLoopbackRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	cfg := Config{Dir: t.TempDir(), NodeID: "n1", Listener: farListener{ln}, Advertise: addr,
		Peers: []Peer{{ID: "n1", Addr: addr}}}
	testTimings(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open(ctx, cfg)
	require.NoError(t, err)
	defer l.Close()
	wait.Until(t, 10*time.Second, "a leader", func() bool { return l.Status().Shards[0].State == "Leader" })

	resp := sendRaw(t, addr, rawJoinFrames("evil1", "evil2"))
	require.Contains(t, string(resp), ErrUnauthorized.Error())
	o := newOutsider(t, nil)
	resp, err = o.call(addr, route.MethodMembership, removePayload("n1"))
	require.True(t, isDenied(resp, err), "remove: %q %v", resp, err)
	require.Equal(t, []string{"n1"}, servers(t, l))
	// Other calls stay open without TLS: there is no identity to check.
	resp, err = o.call(addr, route.MethodReadIndex, readIndexPayload())
	require.NoError(t, err)
	require.False(t, isDenied(resp, err))
}

func TestAuthorizePlain(t *testing.T) {
	loop := mux.Peer{Addr: &net.TCPAddr{IP: net.IPv6loopback, Port: 1}}
	far := mux.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 168, 1, 2), Port: 1}}
	for _, m := range []byte{route.MethodJoin, route.MethodMembership} {
		require.NoError(t, authorizePlain(loop, route.Call{Method: m, Op: route.OpAddVoter, NodeID: "x"}))
		require.ErrorIs(t, authorizePlain(far, route.Call{Method: m, Op: route.OpAddVoter, NodeID: "x"}), ErrUnauthorized)
		require.ErrorIs(t, authorizePlain(mux.Peer{}, route.Call{Method: m}), ErrUnauthorized)
	}
	for _, m := range []byte{route.MethodAppend, route.MethodGroup, route.MethodReadIndex} {
		require.NoError(t, authorizePlain(far, route.Call{Method: m}))
	}
}

func TestAuthorizeIdentity(t *testing.T) {
	members := map[string]member{"n1": {voter: true}, "n2": {voter: true}, "w1": {voter: false}}
	voter := func(id string) nodecert.Identity {
		return nodecert.Identity{Cluster: "c", Role: nodecert.Voter, NodeID: id}
	}
	worker := func(id string) nodecert.Identity {
		return nodecert.Identity{Cluster: "c", Role: nodecert.Worker, NodeID: id}
	}
	join := func(id string, op byte) route.Call { return route.Call{Method: route.MethodJoin, NodeID: id, Op: op} }
	change := func(id string, op byte) route.Call {
		return route.Call{Method: route.MethodMembership, NodeID: id, Op: op}
	}
	for _, tc := range []struct {
		name string
		id   nodecert.Identity
		call route.Call
		ok   bool
	}{
		{"new voter joins as itself", voter("n4"), join("n4", route.OpAddVoter), true},
		{"new voter joins as another", voter("n4"), join("n5", route.OpAddVoter), false},
		{"member joins another", voter("n1"), join("n5", route.OpAddVoter), false},
		{"new worker joins as non-voter", worker("w2"), join("w2", route.OpAddNonvoter), true},
		{"worker joins as voter", worker("w2"), join("w2", route.OpAddVoter), false},
		{"worker member promotes itself", worker("w1"), join("w1", route.OpAddVoter), false},
		{"worker cert demotes a voter of its ID", worker("n1"), join("n1", route.OpAddNonvoter), false},
		{"voter forwards a change", voter("n1"), change("n4", route.OpAddVoter), true},
		{"voter forwards a removal", voter("n2"), change("n1", route.OpRemove), true},
		{"worker forwards a change", worker("w1"), change("w1", route.OpAddVoter), false},
		{"non-member changes membership", voter("n9"), change("n1", route.OpRemove), false},
		{"voter cert of a non-voter changes membership", voter("w1"), change("x", route.OpRemove), false},
		{"member appends", voter("n2"), route.Call{Method: route.MethodAppend}, true},
		{"worker member reads", worker("w1"), route.Call{Method: route.MethodReadIndex}, true},
		{"non-member appends", voter("n9"), route.Call{Method: route.MethodAppend}, false},
		{"non-member reads", voter("n9"), route.Call{Method: route.MethodReadIndex}, false},
		{"non-member group op", worker("w9"), route.Call{Method: route.MethodGroup}, false},
		{"worker cert of a voter appends", worker("n2"), route.Call{Method: route.MethodAppend}, false},
		{"non-member probes", voter("n9"), route.Call{Method: route.MethodProbe}, true},
		{"non-member asks features", worker("w9"), route.Call{Method: route.MethodFeatures}, true},
		{"wiped voter rejoins as itself", voter("n2"), route.Call{Method: route.MethodRejoin, NodeID: "n2", Op: route.OpRejoin}, true},
		{"rejoin as another", voter("n9"), route.Call{Method: route.MethodRejoin, NodeID: "n2", Op: route.OpRejoin}, false},
		{"rejoined voter cert promotes itself", voter("w1"), change("w1", route.OpAddVoter), true},
		{"rejoined voter cert promotes another", voter("w1"), change("n9", route.OpAddVoter), false},
		{"worker promotes itself", worker("w1"), change("w1", route.OpAddVoter), false},
	} {
		err := authorizeIdentity(tc.id, tc.call, members)
		if tc.ok {
			require.NoError(t, err, tc.name)
		} else {
			require.True(t, errors.Is(err, ErrUnauthorized), "%s: %v", tc.name, err)
		}
	}
}
