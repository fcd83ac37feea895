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
// (embedded, thin client): appenders goroutines append batch 200-byte
// events at a time, each append with the exact expected version of its
// stream, to 10,000 streams, and report events/s, the p50 and p99 of an
// append's latency and the process's CPU per event (rawraftbench.RunLoad).
func BenchAppendExact(b *testing.B, s *eventstore.Store, appenders, batch int) {
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
	rawraftbench.RunLoad(b, func() error {
		i := n.Add(1) % streams
		evs := make([]eventstore.EventData, batch)
		for j := range evs {
			evs[j] = eventstore.EventData{Type: "Deposited", Data: data}
		}
		locks[i].Lock()
		defer locks[i].Unlock()
		res, err := s.Append(ctx, names[i], eventstore.Exact(versions[i]), evs)
		if err != nil {
			return err
		}
		versions[i] = res.LastVersion
		return nil
	}, appenders, rawraftbench.Load{Unit: "events/s", PerCall: batch})
}
