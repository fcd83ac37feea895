package faulttest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// Attempt outcomes besides the node's own (wire.Outcome*).
const (
	outcomeRefused   = "refused"   // the node's API refused the connection: not received
	outcomeTransport = "transport" // timeout or reset after the request was sent
	outcomeNoNode    = "no_node"   // no node was running to send it to
)

// applied classifies an attempt outcome: definite (the append was or was
// not applied and the node says which), notApplied (certainly not
// applied), or indeterminate.
func indeterminate(outcome string) bool {
	switch outcome {
	case wire.OutcomeOK, wire.OutcomeWrongVersion, wire.OutcomeIDConflict,
		wire.OutcomeUnavailable, outcomeRefused, outcomeNoNode:
		return false
	}
	return true
}

// Attempt is one try of an Op on one node.
type Attempt struct {
	Node       int
	Start, End time.Time
	Outcome    string
}

// OpStatus is where an Op ended.
type OpStatus int

const (
	// OpAcked: a node acknowledged the append (possibly as a duplicate of
	// an earlier attempt).
	OpAcked OpStatus = iota + 1
	// OpRejected: the expected version did not hold; nothing appended.
	OpRejected
	// OpFailed: a definite error other than a wrong version (an ID
	// conflict: never expected here).
	OpFailed
	// OpUnresolved: the run ended while the op was still being retried
	// after indeterminate attempts.
	OpUnresolved
)

// Op is one logical append; every attempt carries the same event IDs.
type Op struct {
	Worker   int
	Stream   string
	Owned    bool // only this worker appends to Stream
	Expect   int64
	IDs      []uuid.UUID
	Attempts []Attempt
	Status   OpStatus
	Res      wire.AppendResponse // of the acknowledging or rejecting attempt
}

// Indeterminate reports whether some attempt's outcome was unknown.
func (o *Op) Indeterminate() bool {
	for _, a := range o.Attempts {
		if indeterminate(a.Outcome) {
			return true
		}
	}
	return false
}

// History collects the ops of every worker.
type History struct {
	mu  sync.Mutex
	ops []*Op
}

func (h *History) add(op *Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns the recorded ops; call it once the workers have stopped.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ops
}

// WorkloadConfig shapes the appenders.
type WorkloadConfig struct {
	Workers          int
	StreamsPerWorker int // owned streams: exact versions always known
	HotStreams       int // shared by all workers: versions race
	HotFraction      float64
	Rate             float64       // appends/s over all workers (0: unpaced)
	AppendTimeout    time.Duration // the node's deadline for one attempt
	MaxEvents        int           // events per append, 1..MaxEvents
}

// appenders runs the append workload until ctx ends.
type appenders struct {
	cfg  WorkloadConfig
	c    *Cluster
	cl   *client
	hist *History
	an   *Anomalies
	obs  *observed // barrier reads after acknowledged appends go here
	seed uint64
	// lastOK holds, per raft group, the start (Unix ns) of the latest
	// acknowledged attempt.
	lastOK []atomic.Int64
}

// resumedSince reports whether an attempt sent at or after t was
// acknowledged, in group g (or in any group if g < 0).
func (a *appenders) resumedSince(t time.Time, g int) bool {
	for i := range a.lastOK {
		if (g < 0 || g == i) && a.lastOK[i].Load() >= t.UnixNano() {
			return true
		}
	}
	return false
}

func (a *appenders) run(ctx context.Context) {
	var wg sync.WaitGroup
	for w := range a.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.worker(ctx, w)
		}()
	}
	wg.Wait()
}

func (a *appenders) worker(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(a.seed, uint64(w)+1))
	versions := map[string]uint64{}
	var pace <-chan time.Time
	if a.cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(a.cfg.Workers) / a.cfg.Rate * float64(time.Second)))
		defer t.Stop()
		pace = t.C
	}
	data := make([]byte, 64)
	for ctx.Err() == nil {
		if pace != nil {
			select {
			case <-pace:
			case <-ctx.Done():
				return
			}
		}
		op := &Op{Worker: w}
		if a.cfg.HotStreams > 0 && rng.Float64() < a.cfg.HotFraction {
			op.Stream = fmt.Sprintf("hot-%d", rng.IntN(a.cfg.HotStreams))
		} else {
			op.Stream, op.Owned = fmt.Sprintf("w%d-%d", w, rng.IntN(a.cfg.StreamsPerWorker)), true
		}
		op.Expect = int64(versions[op.Stream])
		n := 1 + rng.IntN(a.cfg.MaxEvents)
		req := wire.AppendRequest{Stream: op.Stream, Expect: op.Expect, TimeoutMS: int(a.cfg.AppendTimeout / time.Millisecond)}
		ids := eventIDs(n)
		for _, id := range ids {
			op.IDs = append(op.IDs, id)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			req.Events = append(req.Events, wire.Event{ID: id, Type: "Tested", Data: append([]byte(nil), data[:16+rng.IntN(48)]...)})
		}
		a.hist.add(op)
		a.execute(ctx, rng, op, req)
		switch op.Status {
		case OpAcked:
			versions[op.Stream] = op.Res.LastVersion
			switch rng.IntN(4) {
			case 0:
				a.readOwnWrite(ctx, op)
			case 1:
				a.readAcrossNodes(ctx, rng, op)
			}
		case OpRejected:
			versions[op.Stream] = op.Res.Actual
		case OpUnresolved:
			return
		}
	}
}

// readOwnWrite reads op's first event back from the node that
// acknowledged it, which eventstore promises shows it at once.
func (a *appenders) readOwnWrite(ctx context.Context, op *Op) {
	at := op.Attempts[len(op.Attempts)-1]
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res, err := a.cl.stream(rctx, a.c.Node(at.Node).HTTP(), op.Stream, op.Res.FirstVersion, 1)
	if err != nil {
		return // the node went away meanwhile: nothing learned
	}
	if len(res.Events) == 0 || res.Events[0].ID != op.IDs[0] {
		// eventstore's Append waits for the local apply only until its
		// deadline and then reports success anyway (store.go,
		// readYourWrite): a miss on an append that used its whole
		// deadline is that known gap; any other miss is a violation.
		kind := anReadOwnWrite
		if took := at.End.Sub(at.Start); took >= a.cfg.AppendTimeout-50*time.Millisecond {
			kind = anReadOwnWriteDeadline
		}
		a.an.add(kind, "%s v%d acknowledged by n%d at %v after %v, read back there as %+v",
			op.Stream, op.Res.FirstVersion, at.Node+1, at.End.Format("15:04:05.000"), at.End.Sub(at.Start).Round(time.Millisecond), res.Events)
	}
}

// execute tries op until it has a definite outcome or ctx ends, on a
// random running node each time, with the same event IDs.
func (a *appenders) execute(ctx context.Context, rng *rand.Rand, op *Op, req wire.AppendRequest) {
	last := -1
	for {
		node := pickNode(a.c, rng, last)
		at := Attempt{Node: node, Start: time.Now()}
		var res wire.AppendResponse
		if node < 0 {
			at.Outcome = outcomeNoNode
		} else {
			actx, cancel := context.WithTimeout(ctx, a.cfg.AppendTimeout+2*time.Second)
			var err error
			res, err = a.cl.append(actx, a.c.Node(node).HTTP(), req)
			cancel()
			switch {
			case err == nil:
				at.Outcome = res.Outcome
			case errors.Is(err, errRefused):
				at.Outcome = outcomeRefused
			default:
				at.Outcome = outcomeTransport
			}
		}
		at.End = time.Now()
		op.Attempts = append(op.Attempts, at)
		switch at.Outcome {
		case wire.OutcomeOK:
			op.Status, op.Res = OpAcked, res
			if res.Group >= 0 && res.Group < len(a.lastOK) {
				for start := at.Start.UnixNano(); ; {
					cur := a.lastOK[res.Group].Load()
					if cur >= start || a.lastOK[res.Group].CompareAndSwap(cur, start) {
						break
					}
				}
			}
			return
		case wire.OutcomeWrongVersion:
			op.Status, op.Res = OpRejected, res
			return
		case wire.OutcomeIDConflict:
			op.Status, op.Res = OpFailed, res
			return
		}
		if ctx.Err() != nil {
			op.Status = OpUnresolved
			return
		}
		last = node
		// Pace retries (10-100 ms) so that a node that is down is not
		// hammered; the retry itself waits on the node's own deadline.
		select {
		case <-time.After(time.Duration(10+rng.IntN(90)) * time.Millisecond):
		case <-ctx.Done():
			op.Status = OpUnresolved
			return
		}
	}
}

// pickNode returns a random running node, preferring one other than
// avoid; -1 if none runs.
func pickNode(c *Cluster, rng *rand.Rand, avoid int) int {
	var up []int
	for i := range c.Size() {
		if c.Node(i).HTTP() != "" && i != avoid {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		if avoid >= 0 && c.Node(avoid).HTTP() != "" {
			return avoid
		}
		return -1
	}
	return up[rng.IntN(len(up))]
}

// eventIDs returns n new event IDs: for about half the appends a run of
// consecutive IDs (as raftlog.Append makes for records without IDs, kept
// as one entry of the log's ID index, whose retries and conflicts the
// checker then sees), else independent UUIDv7s (one entry each). Which
// one is decided by the first ID, not by the workload's random source, so
// a seed's workload stays what it was.
func eventIDs(n int) []uuid.UUID {
	first := uuid.Must(uuid.NewV7())
	run := first[15]&1 == 0
	if run {
		first[8] &^= 0x20 // the top bit of the last 62 clear: room to count up
	}
	ids := []uuid.UUID{first}
	for i := 1; i < n; i++ {
		if !run {
			ids = append(ids, uuid.Must(uuid.NewV7()))
			continue
		}
		id := first
		binary.BigEndian.PutUint64(id[8:], binary.BigEndian.Uint64(first[8:])+uint64(i))
		ids = append(ids, id)
	}
	return ids
}
