package raftlog

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

const testClusterName = "test"

// testPKI is a development CA and the certificates it issued, in files.
type testPKI struct {
	t   testing.TB
	dir string
	ca  *nodecert.CA
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := nodecert.NewCA(testClusterName, time.Hour)
	require.NoError(t, err)
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca}
	require.NoError(t, nodecert.WriteFile(p.caFile(), ca.PEM))
	return p
}

func (p *testPKI) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// issue writes a certificate and key for id and returns their files.
func (p *testPKI) issue(role nodecert.Role, id string) (certFile, keyFile string) {
	p.t.Helper()
	cert, key, err := p.ca.Issue(nodecert.Identity{Cluster: testClusterName, Role: role, NodeID: id}, time.Hour, "127.0.0.1")
	require.NoError(p.t, err)
	certFile, keyFile = filepath.Join(p.dir, id+".pem"), filepath.Join(p.dir, id+"-key.pem")
	require.NoError(p.t, nodecert.WriteFile(certFile, cert))
	require.NoError(p.t, nodecert.WriteFile(keyFile, key))
	return certFile, keyFile
}

// nodeTLS gives a node its own certificate: a worker certificate for a
// non-voter.
func (p *testPKI) nodeTLS(c *Config) {
	role := nodecert.Voter
	if c.NonVoter {
		role = nodecert.Worker
	}
	cert, key := p.issue(role, c.NodeID)
	c.TLS = &TLSConfig{Cluster: testClusterName, CertFile: cert, KeyFile: key, CAFile: p.caFile()}
}

// clientTLS is a TLS client configuration holding a certificate for id.
func (p *testPKI) clientTLS(role nodecert.Role, id string) *tls.Config {
	p.t.Helper()
	cf, kf := p.issue(role, id)
	cert, err := tls.LoadX509KeyPair(cf, kf)
	require.NoError(p.t, err)
	return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
}

func newTLSCluster(t testing.TB, n int, mod func(*Config)) (*testCluster, *testPKI) {
	t.Helper()
	p := newTestPKI(t)
	return newClusterPerNode(t, n, mod, p.nodeTLS), p
}

// outsider is a client of a cluster's RPC and raft services that is not a
// node: tls nil means plaintext.
type outsider struct {
	mux    *mux.Mux
	client *mux.Client
}

func newOutsider(t testing.TB, config *tls.Config) *outsider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never served: the mux only dials
	require.NoError(t, err)
	var dial mux.Dialer
	if config != nil {
		dial = mux.TLSDialer(nil, config)
	}
	o := &outsider{mux: mux.New(ln, dial)}
	o.client = mux.NewClient(o.mux, serviceRPC)
	t.Cleanup(func() {
		o.client.Close()
		o.mux.Close()
	})
	return o
}

func (o *outsider) call(addr string, method byte, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return o.client.Call(ctx, addr, method, payload)
}

// appendEntries sends a raft AppendEntries (an old term's: harmless) to
// shard 0 at addr, as node from, of no cluster yet.
func (o *outsider) appendEntries(t testing.TB, from, addr string) error {
	return o.appendEntriesAs(t, from, "", addr)
}

// appendEntriesAs is appendEntries from a node of cluster (a cluster ID).
func (o *outsider) appendEntriesAs(t testing.TB, from, cluster, addr string) error {
	return o.appendEntriesOver(&preambleStream{StreamLayer: o.mux.StreamLayer(serviceShard), pre: clusterPreamble(cluster)}, from, addr)
}

// appendEntriesLegacy is appendEntries from a node of a version before the
// cluster preamble: the connection starts with raft's RPC.
func (o *outsider) appendEntriesLegacy(t testing.TB, from, addr string) error {
	return o.appendEntriesOver(&preambleStream{StreamLayer: o.mux.StreamLayer(serviceShard), legacy: true}, from, addr)
}

func (o *outsider) appendEntriesOver(stream raft.StreamLayer, from, addr string) error {
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 1, Timeout: 3 * time.Second,
	})
	defer trans.Close()
	var resp raft.AppendEntriesResponse
	return trans.AppendEntries(raft.ServerID("n1"), raft.ServerAddress(addr), &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(from), Addr: []byte("127.0.0.1:1")}, Term: 0,
	}, &resp)
}

// preambleStream dials as a node's raft stream does: the cluster ID first.
type preambleStream struct {
	raft.StreamLayer
	pre    [clusterPreambleLen]byte
	legacy bool // no preamble, as a node from before it
}

func (s *preambleStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.StreamLayer.Dial(addr, timeout)
	if err == nil && !s.legacy {
		_, err = c.Write(s.pre[:])
	}
	return c, err
}

func isDenied(resp []byte, err error) bool {
	if err != nil {
		var re *mux.RemoteError
		return errors.As(err, &re) && bytes.Contains([]byte(re.Msg), []byte(ErrUnauthorized.Error()))
	}
	return bytes.Contains(resp, []byte(ErrUnauthorized.Error()))
}

func readIndexPayload() []byte { return binary.AppendUvarint(nil, 0) }

func removePayload(id string) []byte {
	b := binary.AppendUvarint([]byte{route.OpRemove}, 0)
	b = wire.AppendString(b, id)
	return wire.AppendString(b, "")
}

func joinPayload(id string, voter bool) []byte {
	b := wire.AppendString(nil, id)
	b = wire.AppendString(b, "127.0.0.1:1")
	return appendBoolByte(b, voter)
}

func appendBoolByte(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// tlsAppendOK appends one record through l and requires success.
func tlsAppendOK(t testing.TB, l *Log, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := l.Append(ctx, key, []NewRecord{{Value: []byte("v")}})
	require.NoError(t, err)
}

// (a, d) A plain TCP client's hand-written join frames, which add bogus
// voters to a plaintext cluster, reach nothing on a TLS cluster: the
// handshake fails, membership is unchanged and writes go on.
func TestTLSRawJoinRefused(t *testing.T) {
	c, _ := newTLSCluster(t, 3, nil)
	li := c.leader(0)
	for i := range c.nodes {
		resp := sendRaw(t, c.nodes[i].addr, rawJoinFrames("evil1", "evil2", "evil3"))
		require.Empty(t, resp, "node %d answered a plaintext client", i)
	}
	tlsAppendOK(t, c.node(li), "k")
	for i := range c.nodes {
		require.ElementsMatch(t, []string{"n1", "n2", "n3"}, servers(t, c.node(i)))
	}
}

// (d) Plaintext is refused for every service: RPC calls fail to connect,
// raft RPCs fail.
func TestTLSPlaintextRefused(t *testing.T) {
	c, _ := newTLSCluster(t, 3, nil)
	li := c.leader(0)
	o := newOutsider(t, nil)
	_, err := o.call(c.nodes[li].addr, route.MethodReadIndex, readIndexPayload())
	require.ErrorIs(t, err, mux.ErrConnection)
	require.Error(t, o.appendEntries(t, "n2", c.nodes[li].addr))
}

// (c) A certificate from another CA, even one naming a member, fails the
// handshake.
func TestTLSOtherCARefused(t *testing.T) {
	c, _ := newTLSCluster(t, 3, nil)
	li := c.leader(0)
	other := newTestPKI(t)
	o := newOutsider(t, other.clientTLS(nodecert.Voter, "n2"))
	_, err := o.call(c.nodes[li].addr, route.MethodReadIndex, readIndexPayload())
	// In TLS 1.3 the client's handshake ends before the server checks the
	// client's certificate: the client sees the refusal as the server's
	// alert ("tls: ...") or, when the server has closed first, as a
	// broken pipe or reset on its first write.
	require.ErrorIs(t, err, mux.ErrConnection)
	require.Error(t, o.appendEntries(t, "n2", c.nodes[li].addr))
	// And our nodes do not accept such a server either.
	srvCert, _ := other.issue(nodecert.Voter, "n2")
	require.Error(t, c.node(li).tls.client.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leafOf(t, srvCert)}}))
}

func leafOf(t testing.TB, certFile string) *x509.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, certFile[:len(certFile)-4]+"-key.pem")
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	return leaf
}

// (b) A certificate from the cluster's CA for a node that is not a member
// can do nothing: no raft RPC, no forwarded append, no read barrier, no
// membership change, no join under another ID. The same calls with a
// member's certificate pass (so the refusals are authorization's).
func TestTLSUnknownNodeRefused(t *testing.T) {
	c, p := newTLSCluster(t, 3, nil)
	li := c.leader(0)
	addr := c.nodes[li].addr
	evil := newOutsider(t, p.clientTLS(nodecert.Voter, "evil"))
	member := newOutsider(t, p.clientTLS(nodecert.Voter, "n2"))

	// Raft RPCs: the stream is dropped at accept.
	require.Error(t, evil.appendEntries(t, "evil", addr))
	require.NoError(t, member.appendEntries(t, "n2", addr))

	// Forwarded append.
	enc := encodeTestAppend(t, c.node(li))
	resp, err := evil.call(addr, route.MethodAppend, enc)
	require.True(t, isDenied(resp, err), "append: %q %v", resp, err)
	resp, err = member.call(addr, route.MethodAppend, enc)
	require.NoError(t, err)
	require.False(t, isDenied(resp, err))

	// Read barrier.
	resp, err = evil.call(addr, route.MethodReadIndex, readIndexPayload())
	require.True(t, isDenied(resp, err), "read index: %q %v", resp, err)
	resp, err = member.call(addr, route.MethodReadIndex, readIndexPayload())
	require.NoError(t, err)
	require.False(t, isDenied(resp, err))

	// Consumer groups are refused the same way (one check for all calls).
	resp, err = evil.call(addr, route.MethodGroup, nil)
	require.True(t, isDenied(resp, err), "group: %q %v", resp, err)

	// Membership: remove a member, join as someone else.
	resp, err = evil.call(addr, route.MethodMembership, removePayload("n3"))
	require.True(t, isDenied(resp, err), "remove: %q %v", resp, err)
	resp, err = evil.call(addr, route.MethodJoin, joinPayload("evil2", true))
	require.True(t, isDenied(resp, err), "join as another: %q %v", resp, err)
	// A worker certificate cannot join as a voter.
	worker := newOutsider(t, p.clientTLS(nodecert.Worker, "w1"))
	resp, err = worker.call(addr, route.MethodJoin, joinPayload("w1", true))
	require.True(t, isDenied(resp, err), "worker as voter: %q %v", resp, err)

	for i := range c.nodes {
		require.ElementsMatch(t, []string{"n1", "n2", "n3"}, servers(t, c.node(i)))
	}
	tlsAppendOK(t, c.node(li), "k")
}

// encodeTestAppend is a valid encoded append request, as a follower
// forwards it.
func encodeTestAppend(t testing.TB, l *Log) []byte {
	t.Helper()
	req := wire.Request{Partition: l.Partition("k"), Key: "k", Records: []NewRecord{{ID: uuid.New(), Value: []byte("v")}}}
	return wire.EncodeRequest(nil, &req)
}

// Nodes join a TLS cluster with their own certificates: a voter and a
// worker (a worker certificate, NonVoter), and both replicate.
func TestTLSJoinVoterAndWorker(t *testing.T) {
	c, _ := newTLSCluster(t, 3, nil)
	li := c.leader(0)
	tlsAppendOK(t, c.node(li), "before")
	v := c.add(li, false)
	w := c.add((li+1)%3, true)
	tlsAppendOK(t, c.node(li), "after")
	c.converged()
	for _, i := range []int{v, w} {
		require.Len(t, readAll(t, c.node(i), c.node(i).Partition("after")), 1)
	}
	// A joining voter is added as a non-voter and promoted once it has
	// caught up (rejoin.go); the worker stays a non-voter.
	want := map[string]bool{"n1": true, "n2": true, "n3": true, "n4": true, "n5": false}
	var voters map[string]bool
	wait.Until(t, 30*time.Second, "n4 promoted", func() bool {
		voters = map[string]bool{}
		for _, s := range c.node(c.leader(0)).Status().Shards[0].Servers {
			voters[s.ID] = s.Voter
		}
		return voters["n4"]
	})
	require.Equal(t, want, voters)
}

// Open refuses a certificate that names another node, or a worker
// certificate for a voter.
func TestTLSOwnCertificateChecked(t *testing.T) {
	p := newTestPKI(t)
	cert, key := p.issue(nodecert.Voter, "n2")
	_, err := Open(context.Background(), Config{Dir: t.TempDir(), NodeID: "n1", Addr: "127.0.0.1:0",
		TLS: &TLSConfig{Cluster: testClusterName, CertFile: cert, KeyFile: key, CAFile: p.caFile()}})
	require.ErrorIs(t, err, ErrConfig)
	cert, key = p.issue(nodecert.Worker, "n1")
	_, err = Open(context.Background(), Config{Dir: t.TempDir(), NodeID: "n1", Addr: "127.0.0.1:0",
		TLS: &TLSConfig{Cluster: testClusterName, CertFile: cert, KeyFile: key, CAFile: p.caFile()}})
	require.ErrorIs(t, err, ErrConfig)
}

// Data directories are created 0700.
func TestDataDirPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := Open(context.Background(), Config{Dir: dir})
	require.NoError(t, err)
	defer l.Close()
	for _, d := range []string{dir, filepath.Join(dir, "g0")} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), d)
	}
	fi, err := os.Stat(filepath.Join(dir, "raftlog.json"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}
