package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/systemtest/rawraftbench"
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
			appendExact(b, s, 64)
		})
	}
}

// appendExact runs RunUnit with appends of one event at an exact expected
// version to 10,000 streams.
func appendExact(b *testing.B, s *eventstore.Store, appenders int) {
	const streams = 10000
	names := make([]string, streams)
	for i := range names {
		names[i] = fmt.Sprintf("account-%d", i)
	}
	versions := make([]uint64, streams)
	locks := make([]sync.Mutex, streams)
	data := make([]byte, 200)
	var n atomic.Uint64
	ctx := context.Background()
	rawraftbench.RunUnit(b, func() error {
		i := n.Add(1) % streams
		locks[i].Lock()
		defer locks[i].Unlock()
		res, err := s.Append(ctx, names[i], eventstore.Exact(versions[i]), []eventstore.EventData{{Type: "Deposited", Data: data}})
		if err != nil {
			return err
		}
		versions[i] = res.LastVersion
		return nil
	}, appenders, "events/s")
}
