package admin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/nodecert"
)

// TestAdminClientCertificate: a client certificate of the cluster's CA
// naming an identity of the cluster is let in without a token; one of
// another CA, or naming another cluster, or none at all, is refused.
func TestAdminClientCertificate(t *testing.T) {
	store, err := eventstore.Open(context.Background(), t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	ca, err := nodecert.NewCA("orders", time.Hour)
	require.NoError(t, err)
	other, err := nodecert.NewCA("orders", time.Hour)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	h, err := admin.New(admin.Config{Store: store, ClientCAs: pool, Cluster: "orders"})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()

	client := func(issuer *nodecert.CA, cluster string) *http.Client {
		c := srv.Client()
		tr := c.Transport.(*http.Transport).Clone()
		if issuer != nil {
			certPEM, keyPEM, err := issuer.Issue(nodecert.Identity{Cluster: cluster, Role: nodecert.Voter, NodeID: "ops"}, time.Hour)
			require.NoError(t, err)
			kp, err := tls.X509KeyPair(certPEM, keyPEM)
			require.NoError(t, err)
			tr.TLSClientConfig.Certificates = []tls.Certificate{kp}
		}
		return &http.Client{Transport: tr}
	}
	for _, c := range []struct {
		name    string
		client  *http.Client
		status  int
		errText string
	}{
		{"the cluster's certificate", client(ca, "orders"), http.StatusOK, ""},
		{"another CA", client(other, "orders"), http.StatusUnauthorized, "client certificate refused"},
		{"another cluster", client(ca, "billing"), http.StatusUnauthorized, "client certificate refused"},
		{"no certificate", client(nil, ""), http.StatusUnauthorized, `a client certificate naming an identity of cluster "orders"`},
	} {
		resp, err := c.client.Get(srv.URL + "/admin/partitions")
		require.NoError(t, err, c.name)
		var e admin.Error
		if resp.StatusCode != http.StatusOK {
			require.NoError(t, decodeJSON(resp, &e))
		}
		resp.Body.Close()
		require.Equal(t, c.status, resp.StatusCode, c.name)
		require.Contains(t, e.Error, c.errText, c.name)
	}

	// The console takes the certificate instead of a sign-in; a change
	// from another origin is refused even so (the browser sends the
	// certificate as it would a cookie).
	ops := client(ca, "orders")
	ops.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := ops.Get(srv.URL + "/ui/cluster")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = client(nil, "").Get(srv.URL + "/ui/cluster")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "/ui/login?next=%2Fui%2Fcluster", resp.Request.URL.RequestURI(), "sent to the sign-in page")
	req, err := http.NewRequest("POST", srv.URL+"/admin/cluster/rebalance", nil)
	require.NoError(t, err)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err = ops.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}
