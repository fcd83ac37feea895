package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
)

// BenchmarkAppendThinClient compares, in one run, 64 goroutines appending
// through a thin client with the same appends on an embedded replica: one
// 200-byte event per append with an exact expected version, to 10,000
// streams, on a 3-node cluster in this process (figures and the paired
// runs in BENCHMARKS.md):
//
//	go test -run '^$' -bench BenchmarkAppendThinClient -benchtime 3s -count 5 ./client/
//
// embedded appends on the leader's store, embedded-follower on a
// follower's (which forwards to the leader); thin through a client
// connected to the leader, thin-follower to a follower. cohort is the
// leader's group-commit CohortWait (raftlog.Config): how long it waits for
// the callers an entry answered to append again.
func BenchmarkAppendThinClient(b *testing.B) {
	for _, cohort := range []time.Duration{500 * time.Microsecond, 2 * time.Millisecond} {
		for _, mode := range []string{"embedded", "thin", "embedded-follower", "thin-follower"} {
			b.Run(fmt.Sprintf("nodes=3/appenders=64/cohort=%v/%s", cohort, mode), func(b *testing.B) {
				b.StopTimer()
				c := eventstoretest.StartCluster(b, 3, eventstore.LogConfig(func(c *raftlog.Config) { c.CohortWait = cohort }))
				lead := c.Leader(b)
				node := lead
				if mode == "embedded-follower" || mode == "thin-follower" {
					node = (lead + 1) % c.Size
				}
				s := c.Node(node)
				if mode == "thin" || mode == "thin-follower" {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					var err error
					s, err = client.Open(ctx, client.Config{Addrs: []string{c.Node(node).Log().Addr()}})
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
				}
				eventstoretest.BenchAppendExact(b, s, 64, 1)
			})
		}
	}
}
