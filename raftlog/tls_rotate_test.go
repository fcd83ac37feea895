package raftlog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/systemtest/wait"
)

// probe is one TLS connection to a node's cluster port with a client
// certificate from ca: it reports whether the node accepted the client's
// certificate and which CA signed the node's own.
func probe(t testing.TB, addr string, ca *nodecert.CA, cas ...*nodecert.CA) (accepted bool, serverCA int) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(nodecert.Identity{Cluster: testClusterName, Role: nodecert.Voter, NodeID: "probe"}, time.Hour)
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	require.NoError(t, err)
	defer c.Close()
	serverCA = -1
	for i, ca := range cas {
		if c.ConnectionState().PeerCertificates[0].CheckSignatureFrom(ca.Cert) == nil {
			serverCA = i
		}
	}
	// In TLS 1.3 the server judges the client's certificate after the
	// client's handshake returns: a refusal arrives as an alert on read,
	// an acceptance as silence (the node waits for the service byte).
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout(), serverCA
}

// (g) The cluster CA and every node certificate are rotated while appends
// run, through the files the nodes poll: first both CAs, then node
// certificates from the new CA, then the new CA alone; then a follower
// restarts and rejoins over the new material only. No append fails.
func TestTLSRotationUnderLoad(t *testing.T) {
	longTest(t)
	p := newTestPKI(t)
	c := newClusterPerNode(t, 3, nil, func(cfg *Config) {
		p.nodeTLS(cfg)
		cfg.TLS.ReloadInterval = 50 * time.Millisecond
	})
	li := c.leader(0)
	oldCA := p.ca
	newCA, err := nodecert.NewCA(testClusterName, time.Hour)
	require.NoError(t, err)

	follower := (li + 1) % 3
	via := []int{li, (li + 2) % 3} // the appenders never go through the node that restarts
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := c.node(via[n%2]).Append(ctx, fmt.Sprintf("k%d", w), []NewRecord{{Value: []byte("v")}})
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	progress := func(what string) {
		before := ok.Load()
		wait.Until(t, 20*time.Second, "appends after "+what, func() bool { return ok.Load() > before+50 })
	}
	progress("start")

	// 1. Both CAs.
	require.NoError(t, nodecert.WriteFile(p.caFile(), append(append([]byte{}, oldCA.PEM...), newCA.PEM...)))
	for i := range c.nodes {
		wait.Until(t, 10*time.Second, "both CAs trusted", func() bool {
			accepted, _ := probe(t, c.nodes[i].addr, newCA, oldCA, newCA)
			return accepted
		})
	}
	progress("both CAs")

	// 2. Node certificates from the new CA.
	p.ca = newCA
	for i := range c.nodes {
		p.issue(nodecert.Voter, c.nodes[i].id)
	}
	for i := range c.nodes {
		wait.Until(t, 10*time.Second, "new node certificates", func() bool {
			_, by := probe(t, c.nodes[i].addr, oldCA, oldCA, newCA)
			return by == 1
		})
	}
	progress("new certificates")

	// 3. The new CA alone.
	require.NoError(t, nodecert.WriteFile(p.caFile(), newCA.PEM))
	for i := range c.nodes {
		wait.Until(t, 10*time.Second, "old CA no longer trusted", func() bool {
			accepted, _ := probe(t, c.nodes[i].addr, oldCA, oldCA, newCA)
			return !accepted
		})
	}
	progress("new CA only")

	// Fresh connections over the new material only.
	c.restart(follower)
	progress("restart")
	close(stop)
	wg.Wait()
	require.Zero(t, failed.Load(), "failed appends (first: %v)", firstErr.Load())
	c.converged()
	for _, k := range []string{"k0", "k7"} {
		n := len(readAll(t, c.node(follower), c.node(follower).Partition(k)))
		require.Equal(t, len(readAll(t, c.node(li), c.node(li).Partition(k))), n)
	}
	t.Logf("%d appends, none failed", ok.Load())
}

// A reload that cannot load keeps the material in force.
func TestTLSReloadKeepsMaterialOnError(t *testing.T) {
	c, p := newTLSCluster(t, 1, nil)
	l := c.node(0)
	before := l.tls.cur.Load()
	require.NoError(t, nodecert.WriteFile(l.cfg.TLS.CertFile, []byte("not a certificate")))
	require.ErrorIs(t, l.ReloadTLS(), ErrConfig)
	require.Same(t, before, l.tls.cur.Load())
	accepted, _ := probe(t, c.nodes[0].addr, p.ca)
	require.True(t, accepted)
	// A certificate for another node is refused too.
	otherCert, otherKey := p.issue(nodecert.Voter, "n9")
	for src, dst := range map[string]string{otherCert: l.cfg.TLS.CertFile, otherKey: l.cfg.TLS.KeyFile} {
		b, err := os.ReadFile(src)
		require.NoError(t, err)
		require.NoError(t, nodecert.WriteFile(dst, b))
	}
	require.ErrorIs(t, l.ReloadTLS(), ErrConfig)
	require.Same(t, before, l.tls.cur.Load())
	// A good pair is taken.
	p.issue(nodecert.Voter, "n1")
	require.NoError(t, l.ReloadTLS())
	require.NotSame(t, before, l.tls.cur.Load())
}

// Log.ListenerTLS is the node's TLS for another of its listeners (the
// Kafka port): it admits client certificates of the cluster's CA only,
// and a reload of the node's files reaches it.
func TestListenerTLSFollowsReload(t *testing.T) {
	require.Nil(t, (&Log{}).ListenerTLS(), "no TLS, no configuration")
	c, p := newTLSCluster(t, 1, nil)
	l := c.node(0)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", l.ListenerTLS())
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(io.Discard, conn) // the handshake, then silence
			}()
		}
	}()
	addr := ln.Addr().String()
	oldCA := p.ca
	accepted, by := probe(t, addr, oldCA, oldCA)
	require.True(t, accepted, "a client certificate of the cluster's CA")
	require.Equal(t, 0, by)
	stranger, err := nodecert.NewCA(testClusterName, time.Hour)
	require.NoError(t, err)
	accepted, _ = probe(t, addr, stranger)
	require.False(t, accepted, "a client certificate of another CA")

	// The node's certificate from a new CA, both CAs trusted, reloaded.
	newCA, err := nodecert.NewCA(testClusterName, time.Hour)
	require.NoError(t, err)
	require.NoError(t, nodecert.WriteFile(p.caFile(), append(append([]byte{}, oldCA.PEM...), newCA.PEM...)))
	p.ca = newCA
	p.issue(nodecert.Voter, c.nodes[0].id)
	require.NoError(t, l.ReloadTLS())
	accepted, by = probe(t, addr, newCA, oldCA, newCA)
	require.True(t, accepted, "a client certificate of the new CA")
	require.Equal(t, 1, by, "the listener presents the node's new certificate")
}
