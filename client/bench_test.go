package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore/eventstoretest"
)

// BenchmarkAppendThinClient compares, in one run, 64 goroutines appending
// through a thin client with the same appends on an embedded replica: one
// 200-byte event per append with an exact expected version, to 10,000
// streams, on a 3-node cluster (figures in BENCHMARKS.md):
//
//	go test -run '^$' -bench BenchmarkAppendThinClient -benchtime 3s -count 5 ./client/
//
// embedded appends on the leader's store; thin through a client connected
// to the leader; thin-follower through a client connected to a follower,
// which forwards to the leader.
func BenchmarkAppendThinClient(b *testing.B) {
	for _, mode := range []string{"embedded", "thin", "thin-follower"} {
		b.Run("nodes=3/appenders=64/"+mode, func(b *testing.B) {
			b.StopTimer()
			c := eventstoretest.StartCluster(b, 3)
			lead := c.Leader(b)
			s := c.Node(lead)
			if mode != "embedded" {
				node := lead
				if mode == "thin-follower" {
					node = (lead + 1) % c.Size
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				s, err = client.Open(ctx, client.Config{Addrs: []string{c.Node(node).Log().Addr()}})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
			}
			eventstoretest.BenchAppendExact(b, s, 64)
		})
	}
}
