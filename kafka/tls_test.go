package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/internal/nodecert"
)

// clientTLS is a client configuration with a certificate of id from ca
// (none if id is zero), trusting trust.
func clientTLS(t *testing.T, ca, trust *nodecert.CA, id nodecert.Identity) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(trust.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if id.NodeID != "" {
		certPEM, keyPEM, err := ca.Issue(id, time.Hour)
		require.NoError(t, err)
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func TestClusterTLSAdmitsOnlyClusterIdentities(t *testing.T) {
	dir := t.TempDir()
	ca, err := nodecert.NewCA("orders", time.Hour)
	require.NoError(t, err)
	certPEM, keyPEM, err := ca.Issue(nodecert.Identity{Cluster: "orders", Role: nodecert.Voter, NodeID: "n1"}, time.Hour, "127.0.0.1")
	require.NoError(t, err)
	certFile, keyFile, caFile := filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"), filepath.Join(dir, "ca.pem")
	require.NoError(t, nodecert.WriteFile(certFile, certPEM))
	require.NoError(t, nodecert.WriteFile(keyFile, keyPEM))
	require.NoError(t, nodecert.WriteFile(caFile, ca.PEM))
	cfg, err := ClusterTLS("orders", certFile, keyFile, caFile)
	require.NoError(t, err)
	srv, _ := startServer(t, func(c *Config) { c.TLS = cfg })

	metadata := func(tc *tls.Config) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr()), kgo.DialTLSConfig(tc),
			kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		return err
	}
	worker := nodecert.Identity{Cluster: "orders", Role: nodecert.Worker, NodeID: "billing"}
	require.NoError(t, metadata(clientTLS(t, ca, ca, worker)), "a worker certificate of the cluster")

	require.Error(t, metadata(clientTLS(t, ca, ca, nodecert.Identity{})), "no client certificate")
	other, err := nodecert.NewCA("orders", time.Hour)
	require.NoError(t, err)
	require.Error(t, metadata(clientTLS(t, other, ca, worker)), "a certificate of another CA")
	require.Error(t, metadata(clientTLS(t, ca, ca, nodecert.Identity{Cluster: "shop", Role: nodecert.Worker, NodeID: "x"})),
		"an identity of another cluster")
}
