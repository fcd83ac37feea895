package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// Anomalies collects what the readers and the status monitor saw that a
// correct log never shows. Each kind counts occurrences and keeps the
// first few descriptions.
type Anomalies struct {
	mu     sync.Mutex
	counts map[string]int
	notes  map[string][]string
}

func newAnomalies() *Anomalies {
	return &Anomalies{counts: map[string]int{}, notes: map[string][]string{}}
}

func (a *Anomalies) add(kind, format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[kind]++
	if len(a.notes[kind]) < 5 {
		a.notes[kind] = append(a.notes[kind], fmt.Sprintf(format, args...))
	}
}

func (a *Anomalies) count(kind string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[kind]
}

// Reader anomaly kinds.
const (
	anReadGap        = "read-gap"        // a partition read skipped an offset
	anReadBackwards  = "read-backwards"  // a read returned an offset below the one asked for
	anReadReorder    = "read-reorder"    // offsets out of order within one read
	anReadDiverge    = "read-divergence" // two reads saw different events at one offset
	anStreamGap      = "stream-read-gap" // a stream read skipped a version
	anStreamDiverge  = "stream-read-divergence"
	anHeadRegress    = "head-regression"   // a node's partition head went down within one process
	anTermRegress    = "term-regression"   // a node's raft term went down
	anCommitRegress  = "commit-regression" // a node's commit index went down within one process
	anTwoLeaders     = "two-leaders-one-term"
	anLeaderUnknown  = "leader-status-error"
	anUnexpectedExit = "unexpected-exit"
	anReadOwnWrite   = "read-own-write-missing" // an acknowledged append not readable on the node that acknowledged it
	// The same after an append that took its whole deadline: the known
	// gap in eventstore's read-your-writes (see workload.go), reported
	// apart and not a failure of the run.
	anReadOwnWriteDeadline = "read-own-write-missing-at-deadline"
)

// observed holds, per partition, the event every read saw at each offset,
// and per stream the event ID at each version.
type observed struct {
	mu      sync.Mutex
	parts   [][]uuid.UUID
	seen    [][]bool
	streams map[string][]uuid.UUID
	// lin holds the reads made after a read barrier, for the
	// linearizability check (linear.go).
	lin linReads
}

func newObserved(partitions int) *observed {
	return &observed{parts: make([][]uuid.UUID, partitions), seen: make([][]bool, partitions), streams: map[string][]uuid.UUID{}}
}

// record notes e at its offset and version; it reports a conflict with
// an earlier observation.
func (o *observed) record(e wire.ReadEvent) (offsetWas, versionWas uuid.UUID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := e.Partition
	for uint64(len(o.parts[p])) <= e.Offset {
		o.parts[p] = append(o.parts[p], uuid.Nil)
		o.seen[p] = append(o.seen[p], false)
	}
	if o.seen[p][e.Offset] && o.parts[p][e.Offset] != e.ID {
		offsetWas = o.parts[p][e.Offset]
	} else {
		o.parts[p][e.Offset], o.seen[p][e.Offset] = e.ID, true
	}
	versionWas = o.recordVersionLocked(e)
	return offsetWas, versionWas
}

func (o *observed) recordVersionLocked(e wire.ReadEvent) uuid.UUID {
	s := o.streams[e.Stream]
	for uint64(len(s)) < e.Version {
		s = append(s, uuid.Nil)
	}
	o.streams[e.Stream] = s
	if was := s[e.Version-1]; was != uuid.Nil && was != e.ID {
		return was
	}
	s[e.Version-1] = e.ID
	return uuid.Nil
}

// readers tail every partition and read streams, on randomly changing
// nodes, checking what each read returns.
type readers struct {
	c          *Cluster
	cl         *client
	obs        *observed
	an         *Anomalies
	partitions int
	streams    func(rng *rand.Rand) string
	seed       uint64
	interval   time.Duration
}

func (r *readers) run(ctx context.Context) {
	var wg sync.WaitGroup
	for p := range r.partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.tail(ctx, p)
		}()
	}
	for i := range 2 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r.readStreams(ctx, i)
		}()
		go func() {
			defer wg.Done()
			r.readAfterBarrier(ctx, i)
		}()
	}
	wg.Wait()
}

// readAfterBarrier reads the version of random streams on random nodes
// after a read barrier, for the linearizability check.
func (r *readers) readAfterBarrier(ctx context.Context, i int) {
	r.paced(ctx, 3000+uint64(i), func(rng *rand.Rand) {
		if node := pickNode(r.c, rng, -1); node >= 0 {
			barrierRead(ctx, r.c, r.cl, r.obs, node, r.streams(rng))
		}
	})
}

// paced calls step once every interval until ctx ends, with a random
// generator of its own (seeded by the run's seed and stream).
func (r *readers) paced(ctx context.Context, stream uint64, step func(rng *rand.Rand)) {
	rng := rand.New(rand.NewPCG(r.seed, stream))
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		step(rng)
	}
}

// tail follows partition p from offset 0, switching nodes now and then:
// every read must start at the offset asked for and be dense.
func (r *readers) tail(ctx context.Context, p int) {
	node, from := -1, uint64(0)
	r.paced(ctx, 1000+uint64(p), func(rng *rand.Rand) {
		if node < 0 || rng.IntN(20) == 0 {
			node = pickNode(r.c, rng, -1)
			if node < 0 {
				return
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := r.cl.read(rctx, r.c.Node(node).HTTP(), p, from, 500)
		cancel()
		if err != nil {
			node = -1
			return
		}
		want := from
		for i, e := range res.Events {
			switch {
			case e.Offset < from:
				r.an.add(anReadBackwards, "p%d on n%d: asked from %d, got offset %d", p, node+1, from, e.Offset)
			case i > 0 && e.Offset <= res.Events[i-1].Offset:
				r.an.add(anReadReorder, "p%d on n%d: offset %d after %d", p, node+1, e.Offset, res.Events[i-1].Offset)
			case e.Offset != want:
				r.an.add(anReadGap, "p%d on n%d: expected offset %d, got %d", p, node+1, want, e.Offset)
			}
			want = e.Offset + 1
			if e.Partition != p {
				r.an.add(anReadDiverge, "p%d on n%d: offset %d reads as partition %d", p, node+1, e.Offset, e.Partition)
				continue
			}
			if was, vwas := r.obs.record(e); was != uuid.Nil || vwas != uuid.Nil {
				r.an.add(anReadDiverge, "p%d offset %d (%s v%d) on n%d is %s; seen before as %s / version as %s",
					p, e.Offset, e.Stream, e.Version, node+1, e.ID, was, vwas)
			}
		}
		if len(res.Events) > 0 {
			from = res.Events[len(res.Events)-1].Offset + 1
		}
	})
}

// readStreams reads random streams from a random recent version, checking
// versions are dense and agree with every earlier read.
func (r *readers) readStreams(ctx context.Context, i int) {
	r.paced(ctx, 2000+uint64(i), func(rng *rand.Rand) {
		node := pickNode(r.c, rng, -1)
		if node < 0 {
			return
		}
		stream := r.streams(rng)
		r.obs.mu.Lock()
		known := uint64(len(r.obs.streams[stream]))
		r.obs.mu.Unlock()
		from := uint64(1)
		if known > 50 {
			from = known - uint64(rng.IntN(50))
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := r.cl.stream(rctx, r.c.Node(node).HTTP(), stream, from, 200)
		cancel()
		if err != nil {
			return
		}
		want := from
		for _, e := range res.Events {
			if e.Version != want {
				r.an.add(anStreamGap, "%s on n%d: expected version %d, got %d", stream, node+1, want, e.Version)
			}
			want = e.Version + 1
			r.obs.mu.Lock()
			was := r.obs.recordVersionLocked(e)
			r.obs.mu.Unlock()
			if was != uuid.Nil {
				r.an.add(anStreamDiverge, "%s v%d on n%d is %s, seen before as %s", stream, e.Version, node+1, e.ID, was)
			}
		}
	})
}

// monitor polls every node's status: it tracks leaders for the nemesis
// and checks that terms, commit indexes and partition heads never go
// backwards and that no two nodes lead one group in one term.
type monitor struct {
	c        *Cluster
	cl       *client
	an       *Anomalies
	interval time.Duration

	mu      sync.Mutex
	last    []wire.StatusResponse // per node, the latest status
	lastAt  []time.Time
	leaders map[[2]uint64]string // (group, term) -> leader ID
}

func newMonitor(c *Cluster, cl *client, an *Anomalies) *monitor {
	return &monitor{
		c: c, cl: cl, an: an, interval: 100 * time.Millisecond,
		last: make([]wire.StatusResponse, c.Size()), lastAt: make([]time.Time, c.Size()),
		leaders: map[[2]uint64]string{},
	}
}

func (m *monitor) run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		for i := range m.c.Size() {
			m.poll(ctx, i)
		}
	}
}

func (m *monitor) poll(ctx context.Context, i int) {
	addr := m.c.Node(i).HTTP()
	if addr == "" {
		return
	}
	if _, _, _, paused := m.c.Node(i).State(); paused {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	st, err := m.cl.status(sctx, addr)
	cancel()
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.last[i]
	id := m.c.Node(i).ID
	for gi, g := range st.Groups {
		if gi < len(prev.Groups) {
			pg := prev.Groups[gi]
			if g.Term < pg.Term {
				m.an.add(anTermRegress, "%s group %d: term %d after %d (pid %d after %d)", id, gi, g.Term, pg.Term, st.PID, prev.PID)
			}
			if prev.PID == st.PID && g.CommitIndex < pg.CommitIndex {
				m.an.add(anCommitRegress, "%s group %d pid %d: commit index %d after %d", id, gi, st.PID, g.CommitIndex, pg.CommitIndex)
			}
		}
		if g.State == "Leader" {
			k := [2]uint64{uint64(gi), g.Term}
			if other, ok := m.leaders[k]; ok && other != id {
				m.an.add(anTwoLeaders, "group %d term %d: %s and %s both leader", gi, g.Term, other, id)
			}
			m.leaders[k] = id
		}
	}
	if prev.PID == st.PID {
		for p, h := range st.Heads {
			if p < len(prev.Heads) && h.NextOffset < prev.Heads[p].NextOffset {
				m.an.add(anHeadRegress, "%s pid %d p%d: head %d after %d", id, st.PID, p, h.NextOffset, prev.Heads[p].NextOffset)
			}
		}
	}
	m.last[i], m.lastAt[i] = st, time.Now()
}

// forget drops what the monitor knows of node i: its data was wiped, so
// its term and indexes start again from zero.
func (m *monitor) forget(i int) {
	m.mu.Lock()
	m.last[i], m.lastAt[i] = wire.StatusResponse{}, time.Time{}
	m.mu.Unlock()
}

// leader returns the node that the freshest statuses name leader of group
// g (the highest term wins), or -1.
func (m *monitor) leader(g int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	best, bestTerm := -1, uint64(0)
	for i, st := range m.last {
		if time.Since(m.lastAt[i]) > 2*time.Second || g >= len(st.Groups) {
			continue
		}
		if gs := st.Groups[g]; gs.State == "Leader" && gs.Term >= bestTerm {
			best, bestTerm = i, gs.Term
		}
	}
	if best >= 0 {
		if _, _, running, paused := m.c.Node(best).State(); !running || paused {
			return -1
		}
	}
	return best
}
