// Package wait is the tree's one poll-with-a-deadline helper for tests.
// It imports nothing of the project, so the tests of every package, raftlog
// included, can use it.
package wait

import (
	"testing"
	"time"
)

// Until polls cond every 10 ms until it holds, failing t after timeout.
// Unlike testify's require.Eventually, cond runs on the calling goroutine,
// so it may call require or t.Fatal and set variables the test reads
// afterwards, and a slow cond is never abandoned mid-call.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
