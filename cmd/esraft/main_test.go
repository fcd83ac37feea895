package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/internal/nodecert"
)

func TestCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"certs", "-dir", dir, "-cluster", "orders", "-nodes", "n1,n2", "-workers", "w1"}, &out, &errOut))
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	for id, role := range map[string]nodecert.Role{"n1": nodecert.Voter, "n2": nodecert.Voter, "w1": nodecert.Worker} {
		kp, err := tls.LoadX509KeyPair(filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem"))
		require.NoError(t, err)
		leaf, err := x509.ParseCertificate(kp.Certificate[0])
		require.NoError(t, err)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		require.NoError(t, err)
		got, err := nodecert.Parse(leaf, "orders")
		require.NoError(t, err)
		require.Equal(t, nodecert.Identity{Cluster: "orders", Role: role, NodeID: id}, got)
		fi, err := os.Stat(filepath.Join(dir, id+"-key.pem"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	}
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	// A second run keeps the CA and issues new node certificates from it.
	require.NoError(t, run([]string{"certs", "-dir", dir, "-cluster", "orders", "-nodes", "n3"}, &out, &errOut))
	again, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	require.Equal(t, caPEM, again)

	require.Error(t, run([]string{"certs", "-dir", dir, "-cluster", "a/b", "-nodes", "n1"}, &out, &errOut))
	require.Error(t, run([]string{"certs", "-dir", dir, "-cluster", "orders"}, &out, &errOut))
	require.Error(t, run([]string{"nope"}, &out, &errOut))
}
