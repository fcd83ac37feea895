package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// Every subcommand a verb dispatches is named in the verb's usage and on
// the verb's line of the tool's usage, and every subcommand the tool's
// usage names exists.
func TestUsageListsEverySubcommand(t *testing.T) {
	seen := map[string]subcommands{}
	usages := map[string]string{}
	onDispatch = func(group, usage string, subs subcommands) { seen[group], usages[group] = subs, usage }
	t.Cleanup(func() { onDispatch = nil })
	word := func(s, w string) bool {
		return regexp.MustCompile(`(^|[\s(|])` + regexp.QuoteMeta(w) + `($|[\s)|])`).MatchString(s)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(usage, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.Contains(l, "|") {
			lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for _, group := range []string{"cluster", "streams", "partitions", "groups", "parked", "projections"} {
		var out, errOut bytes.Buffer
		require.NoError(t, run([]string{group, "-h"}, &out, &errOut), group)
		subs := seen[group]
		require.NotEmpty(t, subs, group)
		line, ok := lines[group]
		require.True(t, ok, "the tool's usage has no line for %s", group)
		for sub := range subs {
			require.True(t, word(usages[group], sub), "%s %s is missing from the usage of %s:\n%s", group, sub, group, usages[group])
			require.True(t, word(line, sub), "%s %s is missing from the tool's usage line %q", group, sub, line)
		}
		for _, w := range strings.FieldsFunc(line, func(r rune) bool { return r == '|' || r == ' ' || r == '(' || r == ')' }) {
			if strings.HasPrefix(w, "-") || w == "[--follow]" || strings.HasPrefix(w, "[") {
				continue
			}
			_, ok := subs[w]
			require.True(t, ok, "the tool's usage names %s %s, which does not exist", group, w)
		}
	}
}
