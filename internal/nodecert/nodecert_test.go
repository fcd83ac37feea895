package nodecert

import (
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIssueAndParse(t *testing.T) {
	ca, err := NewCA("c1", time.Hour)
	require.NoError(t, err)
	id := Identity{Cluster: "c1", Role: Worker, NodeID: "w1"}
	require.Equal(t, "esraft://c1/worker/w1", id.URI())
	certPEM, _, err := ca.Issue(id, time.Hour, "127.0.0.1", "localhost")
	require.NoError(t, err)
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	got, err := Parse(cert, "c1")
	require.NoError(t, err)
	require.Equal(t, id, got)
	_, err = Parse(cert, "c2")
	require.ErrorIs(t, err, ErrNoIdentity)

	_, _, err = ca.Issue(Identity{Cluster: "c1", Role: "admin", NodeID: "x"}, time.Hour)
	require.Error(t, err)
	_, _, err = ca.Issue(Identity{Cluster: "c1", Role: Voter, NodeID: "a/b"}, time.Hour)
	require.Error(t, err)
}

func TestParseRejects(t *testing.T) {
	for _, uris := range [][]string{
		nil,
		{"spiffe://c1/node/n1"},
		{"esraft://c1/node/n1", "esraft://c1/node/n2"},
		{"esraft://c1/admin/n1"},
		{"esraft://c1/node/"},
		{"esraft://c1/node/n1/x"},
		{"esraft://c1/node/n1?x=1"},
		{"esraft://user@c1/node/n1"},
	} {
		cert := &x509.Certificate{}
		for _, s := range uris {
			u, err := url.Parse(s)
			require.NoError(t, err)
			cert.URIs = append(cert.URIs, u)
		}
		_, err := Parse(cert, "c1")
		require.ErrorIs(t, err, ErrNoIdentity, "%v", uris)
	}
}
