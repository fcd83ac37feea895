package kafka

import (
	"context"
	"hash/crc32"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
)

// startServer opens an embedded store in a temporary directory and a
// Kafka listener on a free port over it.
func startServer(t testing.TB, opts ...func(*Config)) (*Server, *eventstore.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := eventstore.Open(ctx, t.TempDir(), eventstore.MaxAppendEvents(10_000))
	require.NoError(t, err)
	cfg := Config{Store: store, Addr: "127.0.0.1:0", MaxRecordsPerAppend: 10_000}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := Listen(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	return srv, store
}

// needKcat returns kcat's path. A missing kcat fails the test (it is
// never skipped in CI, whose .ci/run installs it) except with -short.
func needKcat(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		missingClient(t, "kcat is not installed: apt-get install -y kcat")
	}
	return p
}

// missingClient fails t for a real client that is not installed, or skips
// it with -short (the inner loop's fast run).
func missingClient(t *testing.T, how string) {
	t.Helper()
	if testing.Short() {
		t.Skip(how)
	}
	t.Fatal(how)
}

// waitFor polls cond every 20 ms until it holds, and fails t with msg()
// (evaluated then) if it does not within timeout.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, msg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func crcOf(batch []byte) uint32 { return crc32.Checksum(batch[crcStart:], castagnoli) }
