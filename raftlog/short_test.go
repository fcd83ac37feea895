package raftlog

import "testing"

// longTest skips t under -short. The fast loop (go test -short ./...) leaves
// out the cluster scenarios that take several seconds each (leader loss,
// isolation, rejoin, rotation under load); the full run, as CI runs it,
// keeps them.
func longTest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a cluster scenario of several seconds: runs without -short")
	}
}
