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

// FuzzParse feeds arbitrary URIs, as a peer's certificate carries them, to
// the identity parser: it must not panic, and an identity it accepts
// renders back to a URI it parses the same.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"esraft://c1/node/n1", "esraft://c1/worker/w-1", "esraft://c1/node/n1/x", "esraft://u@c1/node/n1", "spiffe://c1/node/n1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := Parse(&x509.Certificate{URIs: []*url.URL{u}}, u.Host)
		if err != nil {
			return
		}
		back, err := url.Parse(id.URI())
		require.NoError(t, err)
		again, err := Parse(&x509.Certificate{URIs: []*url.URL{back}}, id.Cluster)
		require.NoError(t, err)
		require.Equal(t, id, again)
	})
}
