package faulttest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// A linearizability check of appends and cross-node reads, beside the
// checks of the final log: every stream is a register holding its
// version, appends are compare-and-set operations on it (an exact expected
// version) and reads after a read barrier on any node must see every
// append acknowledged before the read was sent. Histories are checked per
// stream with porcupine; stale reads are also counted directly, so the
// report says how many reads missed an acknowledged append, not only
// which streams are not linearizable.

// LinRead is a stream read made after a read barrier (GET /head
// barrier=1), usually on a node other than the one that took the writes.
type LinRead struct {
	Stream     string
	Node       int
	Start, End time.Time
	Version    uint64
	LastID     uuid.UUID
}

// linReads collects barrier reads from every goroutine that makes them.
type linReads struct {
	mu    sync.Mutex
	reads []LinRead
}

func (l *linReads) add(r LinRead) {
	l.mu.Lock()
	l.reads = append(l.reads, r)
	l.mu.Unlock()
}

func (l *linReads) all() []LinRead {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LinRead(nil), l.reads...)
}

// barrierRead reads stream's version on node after a read barrier and
// records it; a read that fails records nothing (a read has no effect, so
// leaving it out of the history is sound).
func barrierRead(ctx context.Context, c *Cluster, cl *client, obs *observed, node int, stream string) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	res, err := cl.head(rctx, c.Node(node).HTTP(), stream, true)
	if err != nil {
		return
	}
	obs.lin.add(LinRead{Stream: stream, Node: node, Start: start, End: time.Now(), Version: res.Version, LastID: res.LastID})
	if res.Version > 0 {
		obs.mu.Lock()
		obs.recordVersionLocked(wire.ReadEvent{ID: res.LastID, Stream: stream, Version: res.Version})
		obs.mu.Unlock()
	}
}

// readAcrossNodes reads op's stream after a barrier on a node other than
// the one that acknowledged it: it must show at least op's last version.
func (a *appenders) readAcrossNodes(ctx context.Context, rng *rand.Rand, op *Op) {
	acked := op.Attempts[len(op.Attempts)-1].Node
	node := pickNode(a.c, rng, acked)
	if node < 0 || node == acked {
		return
	}
	barrierRead(ctx, a.c, a.cl, a.obs, node, op.Stream)
}

// Inputs and outputs of the stream register model.
type (
	linAppend struct {
		Expect int64 // >= 0 exact, wire.ExpectAny, wire.ExpectNoStream
		N      uint64
	}
	linAppendOut struct {
		OK     bool   // appended at First; else rejected, the stream at Actual
		First  uint64 // with OK
		Actual uint64 // without OK
	}
	linRead    struct{}
	linReadOut struct{ Version uint64 }
)

// streamModel is one stream: its state is the stream's version.
var streamModel = porcupine.Model{
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		v := state.(uint64)
		switch in := input.(type) {
		case linRead:
			return output.(linReadOut).Version == v, v
		case linAppend:
			out := output.(linAppendOut)
			holds := in.Expect == wire.ExpectAny || (in.Expect == wire.ExpectNoStream && v == 0) || (in.Expect >= 0 && uint64(in.Expect) == v)
			if out.OK {
				return holds && out.First == v+1, v + in.N
			}
			return !holds && out.Actual == v, v
		}
		return false, v
	},
	Equal: func(a, b any) bool { return a.(uint64) == b.(uint64) },
	DescribeOperation: func(input, output any) string {
		switch in := input.(type) {
		case linRead:
			return fmt.Sprintf("read -> %d", output.(linReadOut).Version)
		case linAppend:
			out := output.(linAppendOut)
			if out.OK {
				return fmt.Sprintf("append %d expect %d -> at %d", in.N, in.Expect, out.First)
			}
			return fmt.Sprintf("append %d expect %d -> rejected, at %d", in.N, in.Expect, out.Actual)
		}
		return "?"
	},
}

// LinReport is the outcome of the linearizability check.
type LinReport struct {
	Reads   int // barrier reads checked
	Streams int // streams with at least one barrier read
	// StaleReads counts reads that returned a version below that of an
	// append acknowledged before the read was sent. Must be zero.
	StaleReads int
	// NonLinearizable counts streams porcupine finds no linearization
	// for. Must be zero.
	NonLinearizable int
	// Unknown counts streams porcupine could not decide within its time
	// budget (neither a pass nor a failure).
	Unknown int
	Notes   []string
}

// linTimeout bounds porcupine's search on one stream, linBudget on all of
// them: streams left when it is spent count as undecided.
const (
	linTimeout = 20 * time.Second
	linBudget  = 2 * time.Minute
)

// checkLinearizable checks the barrier reads against the appends of ops:
// acknowledged and rejected appends as they ended, an append whose
// outcome stayed unknown as appended (still running at the end of the
// history) if final holds its first event, else left out. final indexes
// one node's final log by event ID.
func checkLinearizable(ops []*Op, reads []LinRead, final map[uuid.UUID]loc) LinReport {
	var r LinReport
	if len(reads) == 0 {
		return r
	}
	byStream := map[string][]porcupine.Operation{}
	acked := map[string][]*Op{}
	readStreams := map[string]bool{}
	for _, rd := range reads {
		readStreams[rd.Stream] = true
	}
	for _, op := range ops {
		if !readStreams[op.Stream] || len(op.Attempts) == 0 || len(op.IDs) == 0 {
			continue
		}
		in := linAppend{Expect: op.Expect, N: uint64(len(op.IDs))}
		call := sinceEpoch(op.Attempts[0].Start)
		ret := sinceEpoch(op.Attempts[len(op.Attempts)-1].End)
		var out linAppendOut
		switch op.Status {
		case OpAcked:
			out = linAppendOut{OK: true, First: op.Res.FirstVersion}
			acked[op.Stream] = append(acked[op.Stream], op)
		case OpRejected:
			out = linAppendOut{Actual: op.Res.Actual}
		default:
			l, ok := final[op.IDs[0]]
			if !ok {
				continue // never appended: no effect to place
			}
			out, ret = linAppendOut{OK: true, First: l.version}, math.MaxInt64
		}
		byStream[op.Stream] = append(byStream[op.Stream], porcupine.Operation{ClientId: op.Worker, Input: in, Output: out, Call: call, Return: ret})
	}
	// Per stream, acknowledged appends by the time of their
	// acknowledgement, and the highest version acknowledged up to each.
	top := map[string][]int{}
	for s, as := range acked {
		sort.Slice(as, func(i, j int) bool { return lastEnd(as[i]).Before(lastEnd(as[j])) })
		best := make([]int, len(as))
		for i, op := range as {
			best[i] = i
			if i > 0 && as[best[i-1]].Res.LastVersion >= op.Res.LastVersion {
				best[i] = best[i-1]
			}
		}
		top[s] = best
	}
	for _, rd := range reads {
		r.Reads++
		byStream[rd.Stream] = append(byStream[rd.Stream], porcupine.Operation{
			ClientId: -1, Input: linRead{}, Output: linReadOut{Version: rd.Version},
			Call: sinceEpoch(rd.Start), Return: sinceEpoch(rd.End),
		})
		// The highest version acknowledged before the read was sent.
		as := acked[rd.Stream]
		n := sort.Search(len(as), func(i int) bool { return !lastEnd(as[i]).Before(rd.Start) })
		if n == 0 {
			continue
		}
		by := as[top[rd.Stream][n-1]]
		if floor := by.Res.LastVersion; rd.Version < floor {
			r.StaleReads++
			if len(r.Notes) < 5 {
				r.Notes = append(r.Notes, fmt.Sprintf("stale read: %s on n%d at %s returned version %d; version %d was acknowledged at %s",
					rd.Stream, rd.Node+1, rd.Start.Format("15:04:05.000"), rd.Version, floor, lastEnd(by).Format("15:04:05.000")))
			}
		}
	}
	streams := make([]string, 0, len(readStreams))
	for s := range readStreams {
		streams = append(streams, s)
	}
	sort.Strings(streams)
	r.Streams = len(streams)
	deadline := time.Now().Add(linBudget)
	for _, s := range streams {
		left := min(linTimeout, time.Until(deadline))
		if left <= 0 {
			r.Unknown++
			continue
		}
		switch porcupine.CheckOperationsTimeout(streamModel, byStream[s], left) {
		case porcupine.Illegal:
			r.NonLinearizable++
			if len(r.Notes) < 10 {
				r.Notes = append(r.Notes, fmt.Sprintf("not linearizable: stream %s (%d operations)", s, len(byStream[s])))
			}
		case porcupine.Unknown:
			r.Unknown++
		}
	}
	return r
}

func lastEnd(op *Op) time.Time { return op.Attempts[len(op.Attempts)-1].End }

// linEpoch and sinceEpoch give porcupine times from the monotonic clock
// (times taken by time.Now in this process carry it), so that a step of
// the wall clock during a run cannot reorder operations.
var linEpoch = time.Now()

func sinceEpoch(t time.Time) int64 { return int64(t.Sub(linEpoch)) }
