package eventstoretest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/systemtest/rawraftbench"
)

// BenchAppendExact is the append benchmark of the store's implementations
// (embedded, thin client): appenders goroutines append one 200-byte event
// at a time, each with the exact expected version of its stream, to
// 10,000 streams, and report events/s and the p99 latency.
func BenchAppendExact(b *testing.B, s *eventstore.Store, appenders int) {
	b.Helper()
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
