package raftlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// TestCloseAllNodesAtOnceUnderLoad closes the three nodes of a cluster at
// the same time while appends run, with each node leading one of three
// shards. Every Close must return, cleanly: a node whose raft is down but
// whose transport still accepts appends never answers them, and a leader
// of another shard then waits on that pipeline in its own shutdown (seen
// as a hang of the whole test binary before shards closed their transports
// as soon as their raft stopped).
func TestCloseAllNodesAtOnceUnderLoad(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.Partitions, cfg.Shards = 3, 3
		cfg.BalanceInterval = 100 * time.Millisecond
	})
	waitBalanced(t, c, []int{0, 1, 2})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var appended sync.WaitGroup
	var acked sync.Map
	for i := 0; i < 3; i++ {
		l := c.node(i)
		for w := 0; w < 8; w++ {
			appended.Add(1)
			go func() {
				defer appended.Done()
				for n := 0; ctx.Err() == nil; n++ {
					key := fmt.Sprintf("k-%d-%d-%d", i, w, n)
					_, err := l.Append(ctx, key, []NewRecord{{Value: []byte("v")}})
					if errors.Is(err, ErrClosed) {
						return
					}
					if err == nil {
						acked.Store(key, true)
					}
				}
			}()
		}
	}
	waitAcked := func(n int) bool {
		count := 0
		acked.Range(func(any, any) bool { count++; return count < n })
		return count >= n
	}
	wait.Until(t, 30*time.Second, "300 acknowledged appends", func() bool { return waitAcked(300) })

	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		l := c.node(i)
		go func() { errs <- l.Close() }()
	}
	deadline := time.After(2 * shutdownWait)
	for i := 0; i < 3; i++ {
		select {
		case err := <-errs:
			require.NoError(t, err)
		case <-deadline:
			t.Fatalf("%d of 3 nodes still closing after %v", 3-i, 2*shutdownWait)
		}
	}
	cancel()
	appended.Wait()
	c.closeAll()
}
