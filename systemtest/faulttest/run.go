package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// Config is one run of the suite.
type Config struct {
	Cluster  ClusterConfig
	Workload WorkloadConfig
	Seed     uint64
	Duration time.Duration // how long the nemesis runs
	// Quiet is the range of pauses between faults.
	Quiet [2]time.Duration
	// Kinds restricts the nemesis to these fault kinds (nil: all).
	Kinds []string
	// ReadInterval paces each partition tailer and stream reader.
	ReadInterval time.Duration
	// ConsumerGroup, if set, runs a consumer group member in every node
	// and checks what the group handled and committed (see consumer.go).
	ConsumerGroup *ConsumerGroupWorkload
}

// Run starts the cluster, runs the workload under the nemesis for
// cfg.Duration, heals everything, reads every node's log and checks it.
// The run's directory keeps node logs, the nemesis log and report.json.
func Run(ctx context.Context, cfg Config, logf func(string, ...any)) (*Report, error) {
	start := time.Now()
	flog, err := os.Create(filepath.Join(cfg.Cluster.Dir, "nemesis.log"))
	if err != nil {
		return nil, err
	}
	defer flog.Close()
	var logMu sync.Mutex
	log := func(format string, args ...any) {
		msg := fmt.Sprintf("%8.3fs ", time.Since(start).Seconds()) + fmt.Sprintf(format, args...)
		logMu.Lock()
		fmt.Fprintln(flog, msg)
		logMu.Unlock()
		logf("%s", msg)
	}
	log("seed %d: %d nodes, %d partitions, %d groups, nemesis for %v", cfg.Seed, cfg.Cluster.Nodes, cfg.Cluster.Partitions, cfg.Cluster.Groups, cfg.Duration)
	if cfg.ConsumerGroup != nil {
		cfg.Cluster.GroupSession = cfg.ConsumerGroup.SessionTimeout
	}
	an := newAnomalies()
	c, err := NewCluster(cfg.Cluster, log, func(e Exit) {
		an.add(anUnexpectedExit, "n%d pid %d: %s", e.Node+1, e.PID, e.Err)
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cl := newClient()
	mon := newMonitor(c, cl, an)

	if err := startAll(ctx, c); err != nil {
		return nil, err
	}
	hctx, hcancel := context.WithTimeout(ctx, time.Minute)
	err = awaitHealthy(hctx, c, mon, cfg.Cluster.Groups, true)
	hcancel()
	if err != nil {
		return nil, err
	}
	log("cluster up")

	hist := &History{}
	obs := newObserved(cfg.Cluster.Partitions)
	apps := &appenders{cfg: cfg.Workload, c: c, cl: cl, hist: hist, an: an, obs: obs, seed: cfg.Seed, lastOK: make([]atomic.Int64, cfg.Cluster.Groups)}
	rds := &readers{
		c: c, cl: cl, obs: obs, an: an, partitions: cfg.Cluster.Partitions, seed: cfg.Seed, interval: cfg.ReadInterval,
		streams: func(rng *rand.Rand) string {
			if cfg.Workload.HotStreams > 0 && rng.IntN(3) == 0 {
				return fmt.Sprintf("hot-%d", rng.IntN(cfg.Workload.HotStreams))
			}
			return fmt.Sprintf("w%d-%d", rng.IntN(cfg.Workload.Workers), rng.IntN(cfg.Workload.StreamsPerWorker))
		},
	}
	nem := &nemesis{
		c: c, mon: mon, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e656d)), groups: cfg.Cluster.Groups, logf: log,
		quiet: cfg.Quiet, recover: time.Minute, kinds: cfg.Kinds,
	}

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	var wg sync.WaitGroup
	goRun := func(fn func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(wctx)
		}()
	}
	goRun(mon.run)
	goRun(apps.run)
	goRun(rds.run)
	nctx, ncancel := context.WithTimeout(ctx, cfg.Duration)
	nem.run(nctx)
	ncancel()
	faults := nem.Faults()
	if n := len(faults); n > 0 {
		// Let the workload show whether writes resumed after the last
		// fault before stopping it.
		f := faults[n-1]
		deadline := time.Now().Add(30 * time.Second)
		for !apps.resumedSince(f.Start, f.Group) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond) // polling a condition, under a deadline
		}
	}
	log("nemesis done: %d faults; stopping the workload", len(faults))
	wcancel()
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Final state: heal, wait for one leader, let late appends settle,
	// then one barrier append per group applied on every node.
	fctx, fcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer fcancel()
	if err := healAll(fctx, c); err != nil {
		return nil, fmt.Errorf("final heal: %w", err)
	}
	// Not every node need be a voter again: a fault after which one was
	// not promoted is a fault error the report shows.
	if err := awaitHealthy(fctx, c, mon, cfg.Cluster.Groups, false); err != nil {
		return nil, fmt.Errorf("final heal: %w", err)
	}
	ops := hist.Ops()
	if err := settle(fctx, ops, cfg.Workload.AppendTimeout); err != nil {
		return nil, err
	}
	barriers, err := barrier(fctx, c, cl, cfg)
	if err != nil {
		return nil, err
	}
	ops = append(ops, barriers...)
	logs, err := collect(fctx, c, cl, cfg.Cluster.Partitions)
	if err != nil {
		return nil, err
	}
	rep := Check(ops, logs, obs, an, faults)
	rep.Seed, rep.Duration = cfg.Seed, time.Since(start)
	nodeLogs := make([][]byte, c.Size())
	for i := range c.Size() {
		b, err := os.ReadFile(filepath.Join(cfg.Cluster.Dir, c.Node(i).ID+".log"))
		if err == nil {
			rep.LeaderElections += bytes.Count(b, []byte("entering leader state"))
			rep.SnapshotInstalls += bytes.Count(b, []byte("Installed remote snapshot"))
			nodeLogs[i] = b
		}
	}
	rep.ApplyDigests = compareDigests(nodeLogs)
	if cfg.ConsumerGroup != nil {
		log("waiting for the consumer group to commit every partition to its end")
		if err := cfg.ConsumerGroup.finish(fctx, c, cl, logs, rep); err != nil {
			return nil, err
		}
	}
	log("report:\n%s", rep)
	if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
		os.WriteFile(filepath.Join(cfg.Cluster.Dir, "report.json"), b, 0o644)
	}
	return rep, nil
}

func startAll(ctx context.Context, c *Cluster) error {
	errs := make([]error, c.Size())
	var wg sync.WaitGroup
	for i := range c.Size() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Start(ctx, i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// settle waits until every attempt's server-side deadline has passed, so
// that no node still works on an append when the barrier goes in.
func settle(ctx context.Context, ops []*Op, appendTimeout time.Duration) error {
	var last time.Time
	for _, op := range ops {
		for _, a := range op.Attempts {
			if a.Start.After(last) {
				last = a.Start
			}
		}
	}
	until := last.Add(appendTimeout + time.Second)
	for time.Now().Before(until) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(until)):
		}
	}
	return nil
}

// partitionOf mirrors raftlog's routing: FNV-1a of the key modulo the
// number of partitions.
func partitionOf(key string, partitions int) int {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int(h.Sum64() % uint64(partitions))
}

// barrier appends one event per raft group and waits until every node
// has applied it: every node then holds everything committed before.
func barrier(ctx context.Context, c *Cluster, cl *client, cfg Config) ([]*Op, error) {
	var ops []*Op
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xba))
	a := &appenders{cfg: cfg.Workload, c: c, cl: cl, hist: &History{}, an: newAnomalies()}
	for g := range cfg.Cluster.Groups {
		stream := ""
		for k := 0; ; k++ {
			stream = fmt.Sprintf("barrier-%d", k)
			if partitionOf(stream, cfg.Cluster.Partitions)%cfg.Cluster.Groups == g {
				break
			}
		}
		id := uuid.Must(uuid.NewV7())
		op := &Op{Worker: -1, Stream: stream, Expect: wire.ExpectAny, IDs: []uuid.UUID{id}}
		a.execute(ctx, rng, op, wire.AppendRequest{
			Stream: stream, Expect: wire.ExpectAny, TimeoutMS: int(cfg.Workload.AppendTimeout / time.Millisecond),
			Events: []wire.Event{{ID: id, Type: "Barrier"}},
		})
		if op.Status != OpAcked {
			return nil, fmt.Errorf("barrier append to group %d: status %d, attempts %+v", g, op.Status, op.Attempts)
		}
		if op.Res.Group != g {
			return nil, fmt.Errorf("barrier stream %s went to group %d, not %d", stream, op.Res.Group, g)
		}
		ops = append(ops, op)
	}
	for i := range c.Size() {
		for {
			st, err := cl.status(ctx, c.Node(i).HTTP())
			done := err == nil
			for _, op := range ops {
				done = done && st.Groups[op.Res.Group].AppliedIndex >= op.Res.Index
			}
			if done {
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("n%d did not apply the barrier: %w", i+1, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return ops, nil
}

// collect reads every partition of every node, and digests each up to
// the highest head of any node.
func collect(ctx context.Context, c *Cluster, cl *client, partitions int) ([]NodeLog, error) {
	logs := make([]NodeLog, c.Size())
	upto := make([]uint64, partitions)
	for i := range c.Size() {
		addr := c.Node(i).HTTP()
		st, err := cl.status(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("n%d status: %w", i+1, err)
		}
		nl := NodeLog{Node: i, Heads: make([]uint64, partitions), Parts: make([][]wire.ReadEvent, partitions)}
		for _, h := range st.Heads {
			nl.Heads[h.Partition] = h.NextOffset
			upto[h.Partition] = max(upto[h.Partition], h.NextOffset)
		}
		for p := range partitions {
			from := uint64(0)
			for {
				res, err := cl.read(ctx, addr, p, from, 1000)
				if err != nil && isCorrupt(err) {
					// Damage the node detected and refuses to serve.
					if nl.Damaged == nil {
						nl.Damaged = map[int]string{}
					}
					nl.Damaged[p] = err.Error()
					break
				}
				if err != nil {
					return nil, fmt.Errorf("n%d read p%d from %d: %w", i+1, p, from, err)
				}
				nl.Parts[p] = append(nl.Parts[p], res.Events...)
				if len(res.Events) == 0 || res.Next <= from {
					break
				}
				from = res.Next
			}
		}
		logs[i] = nl
	}
	for i := range logs {
		addr := c.Node(i).HTTP()
		for p := range partitions {
			if damaged(logs[i], p) {
				logs[i].Digests = append(logs[i].Digests, "damaged")
				continue
			}
			d, err := cl.digest(ctx, addr, p, upto[p])
			if err != nil {
				return nil, fmt.Errorf("n%d digest p%d: %w", i+1, p, err)
			}
			logs[i].Digests = append(logs[i].Digests, d.Hash)
		}
	}
	// The checks take the first log as the reference: one the node could
	// read in full, if any.
	slices.SortStableFunc(logs, func(a, b NodeLog) int { return len(a.Damaged) - len(b.Damaged) })
	return logs, nil
}

// isCorrupt reports whether a node's read error says the data is
// damaged (raftlog's ErrCorrupt, whatever the engine adds to it).
func isCorrupt(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "corrupt")
}
