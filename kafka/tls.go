package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/esraft/esraft/internal/nodecert"
)

// ClusterTLS is a listener configuration for mutual TLS with the cluster's
// identities (SECURITY.md): the listener presents this node's certificate
// and accepts a client only with a certificate from the cluster's CA that
// names an identity of cluster (a node or a worker,
// esraft://<cluster>/node/<id> or .../worker/<id>). Files are read once:
// on a node, raftlog's Log.ListenerTLS is the same check on the node's own
// TLS, which follows a rotation of its files.
func ClusterTLS(cluster, certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("kafka: TLS certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("kafka: TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kafka: TLS CA: no certificate in %s", caFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("kafka: no client certificate")
			}
			_, err := nodecert.Parse(cs.PeerCertificates[0], cluster)
			return err
		},
	}, nil
}
