// Package rawraftbench is a baseline benchmark harness for plain
// hashicorp/raft backed by raft-boltdb/v2 (fsync on), a FileSnapshotStore and
// a trivial counting FSM.
//
// The harness is exported so that other packages' benchmarks (raftlog's
// and eventstore's, which is why it is not under raftlog/internal) can
// reuse the cluster plumbing (StartCluster / StartClusterWithStores) and
// the timed apply loop with its metrics (Run, RunUnit), and so report
// numbers that are directly comparable with BenchmarkRawRaft.
package rawraftbench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// RecordSize is the size in bytes of one benchmark record (one raft.Apply).
const RecordSize = 200

// Record returns a fresh RecordSize-byte payload. The returned slice is never
// mutated by the harness, so it may be shared by concurrent appliers.
func Record() []byte {
	rec := make([]byte, RecordSize)
	for i := range rec {
		rec[i] = byte('a' + i%26)
	}
	return rec
}

// setupTimeout bounds leader election / cluster stabilisation in StartCluster.
const setupTimeout = 60 * time.Second

// CountingFSM is a trivial raft.FSM that only counts applied log entries.
type CountingFSM struct {
	n atomic.Uint64
}

// Count returns the number of entries applied to the FSM.
func (f *CountingFSM) Count() uint64 { return f.n.Load() }

// Apply implements raft.FSM.
func (f *CountingFSM) Apply(*raft.Log) interface{} {
	f.n.Add(1)
	return nil
}

// Snapshot implements raft.FSM; the snapshot is just the 8-byte counter.
func (f *CountingFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countSnapshot(f.n.Load()), nil
}

// Restore implements raft.FSM.
func (f *CountingFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var buf [8]byte
	if _, err := io.ReadFull(rc, buf[:]); err != nil {
		return err
	}
	f.n.Store(binary.BigEndian.Uint64(buf[:]))
	return nil
}

type countSnapshot uint64

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(s))
	if _, err := sink.Write(buf[:]); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// StoreFactory opens the LogStore and StableStore of one node inside dir (a
// private, initially empty directory). closeFn is called on teardown after
// the node's raft instance has been shut down.
type StoreFactory func(dir string) (logs raft.LogStore, stable raft.StableStore, closeFn func() error, err error)

// BoltStores is the default StoreFactory: a single raft-boltdb/v2 BoltStore
// (dir/raft.db, default options, i.e. fsync on every commit) used as both
// LogStore and StableStore. It is not wrapped in a raft.LogCache.
func BoltStores(dir string) (raft.LogStore, raft.StableStore, func() error, error) {
	s, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, nil, nil, err
	}
	return s, s, s.Close, nil
}

// Node is one raft server of a Cluster.
type Node struct {
	ID        raft.ServerID
	Addr      raft.ServerAddress
	Dir       string // private temp dir, removed by Cluster.Close
	Raft      *raft.Raft
	FSM       *CountingFSM
	Transport raft.Transport

	closeStores func() error
}

// Cluster is a set of in-process raft nodes bootstrapped as voters of one
// configuration, with an elected and stable leader.
type Cluster struct {
	Nodes  []*Node
	leader *raft.Raft

	tb        testing.TB
	closeOnce sync.Once
}

// StartCluster starts an n-node cluster on BoltStores and waits until it has
// a leader that has committed an entry of its term. See StartClusterWithStores.
func StartCluster(tb testing.TB, nodes int) *Cluster {
	tb.Helper()
	return StartClusterWithStores(tb, nodes, BoltStores)
}

// StartClusterWithStores starts an n-node in-process cluster whose nodes get
// their log/stable stores from newStores, and waits for a stable leader.
//
// Each node has its own os.MkdirTemp directory holding the stores and a
// raft.FileSnapshotStore (retain 1), a CountingFSM, and raft.DefaultConfig()
// with only LocalID set and logging silenced (LogLevel "OFF", output
// io.Discard). Transport: for n == 1 a raft.InmemTransport (no traffic ever
// crosses it); for n > 1 a raft.NewTCPTransport on 127.0.0.1:0 per node
// (maxPool 3, timeout 10s). Every node is bootstrapped with the same
// all-voter configuration.
//
// Before returning it waits until one node is leader, a Barrier on it
// succeeds (so its term is committed by a quorum) and every node agrees on
// the leader. Failures call tb.Fatalf. Close is registered with tb.Cleanup,
// but callers benchmarking should call Close themselves (after the timer is
// stopped) so every b.N run tears its cluster down before the next one.
func StartClusterWithStores(tb testing.TB, nodes int, newStores StoreFactory) *Cluster {
	tb.Helper()
	if nodes < 1 {
		tb.Fatalf("rawraftbench: nodes must be >= 1, got %d", nodes)
	}
	c := &Cluster{tb: tb}
	tb.Cleanup(c.Close)

	for i := 0; i < nodes; i++ {
		n, err := newNode(i, nodes)
		if n != nil {
			c.Nodes = append(c.Nodes, n) // so Close cleans up partial nodes
		}
		if err != nil {
			tb.Fatalf("rawraftbench: node %d: %v", i, err)
		}
	}
	servers := make([]raft.Server, nodes)
	for i, n := range c.Nodes {
		servers[i] = raft.Server{Suffrage: raft.Voter, ID: n.ID, Address: n.Addr}
	}
	// Wire in-mem transports (only relevant if someone uses >1 in-mem node).
	for i, n := range c.Nodes {
		if t, ok := n.Transport.(*raft.InmemTransport); ok {
			for j, m := range c.Nodes {
				if i != j {
					t.Connect(m.Addr, m.Transport)
				}
			}
		}
	}
	for _, n := range c.Nodes {
		cfg := nodeConfig(n.ID)
		n.FSM = &CountingFSM{}
		logs, stable, snaps, err := n.openStores(newStores)
		if err != nil {
			tb.Fatalf("rawraftbench: %s: %v", n.ID, err)
		}
		if err := raft.BootstrapCluster(cfg, logs, stable, snaps, n.Transport,
			raft.Configuration{Servers: servers}); err != nil {
			tb.Fatalf("rawraftbench: bootstrap %s: %v", n.ID, err)
		}
		r, err := raft.NewRaft(cfg, n.FSM, logs, stable, snaps, n.Transport)
		if err != nil {
			tb.Fatalf("rawraftbench: NewRaft %s: %v", n.ID, err)
		}
		n.Raft = r
	}
	if err := c.waitStable(setupTimeout); err != nil {
		tb.Fatalf("rawraftbench: %v", err)
	}
	return c
}

func nodeConfig(id raft.ServerID) *raft.Config {
	cfg := raft.DefaultConfig()
	cfg.LocalID = id
	cfg.LogLevel = "OFF"
	cfg.LogOutput = io.Discard
	return cfg
}

// newNode creates the node's temp dir and transport.
func newNode(i, total int) (*Node, error) {
	dir, err := os.MkdirTemp("", "rawraftbench-")
	if err != nil {
		return nil, err
	}
	n := &Node{ID: raft.ServerID(fmt.Sprintf("node%d", i)), Dir: dir}
	if total == 1 {
		addr, t := raft.NewInmemTransport("")
		n.Addr, n.Transport = addr, t
		return n, nil
	}
	t, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
	if err != nil {
		return n, err
	}
	n.Addr, n.Transport = t.LocalAddr(), t
	return n, nil
}

// openStores opens the node's stores and snapshot store.
func (n *Node) openStores(newStores StoreFactory) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error) {
	logs, stable, closeFn, err := newStores(n.Dir)
	if err != nil {
		return nil, nil, nil, err
	}
	n.closeStores = closeFn
	snaps, err := raft.NewFileSnapshotStore(n.Dir, 1, io.Discard)
	if err != nil {
		return nil, nil, nil, err
	}
	return logs, stable, snaps, nil
}

func (c *Cluster) waitStable(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for c.leader == nil {
		for _, n := range c.Nodes {
			if n.Raft.State() == raft.Leader {
				c.leader = n.Raft
			}
		}
		if c.leader == nil {
			if time.Now().After(deadline) {
				return errors.New("no leader elected")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := c.leader.Barrier(time.Until(deadline)).Error(); err != nil {
		return fmt.Errorf("leader barrier: %w", err)
	}
	want, _ := c.leader.LeaderWithID()
	for _, n := range c.Nodes {
		for {
			if got, _ := n.Raft.LeaderWithID(); got == want {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s does not see leader %s", n.ID, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if c.leader.State() != raft.Leader {
		return errors.New("leadership lost during setup")
	}
	return nil
}

// Leader returns the node that currently reports itself leader, falling back
// to the leader found by StartCluster. All benchmark applies go to it.
func (c *Cluster) Leader() *raft.Raft {
	for _, n := range c.Nodes {
		if n.Raft != nil && n.Raft.State() == raft.Leader {
			return n.Raft
		}
	}
	return c.leader
}

// Close shuts down every raft instance (which also closes its transport),
// closes the stores and removes the temp dirs. Errors are reported with
// tb.Errorf. Close is idempotent.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		for _, n := range c.Nodes {
			if n.Raft != nil {
				if err := n.Raft.Shutdown().Error(); err != nil {
					c.tb.Errorf("rawraftbench: shutdown %s: %v", n.ID, err)
				}
			}
			if cl, ok := n.Transport.(raft.WithClose); ok {
				_ = cl.Close() // idempotent; covers nodes whose NewRaft failed
			}
		}
		for _, n := range c.Nodes {
			if n.closeStores != nil {
				if err := n.closeStores(); err != nil {
					c.tb.Errorf("rawraftbench: close stores %s: %v", n.ID, err)
				}
			}
			if err := os.RemoveAll(n.Dir); err != nil {
				c.tb.Errorf("rawraftbench: remove %s: %v", n.Dir, err)
			}
		}
	})
}

// Run is the timed section of a benchmark: it resets and starts b's timer,
// runs `appenders` goroutines that pull work from a shared counter until
// b.N calls of apply have completed (apply must block until the entry is
// committed/applied, e.g. `return r.Apply(rec, 0).Error()`), records every
// call's latency, then stops the timer. ns/op is therefore wall time / b.N
// (inverse throughput). It reports the metrics of RunLoad with one record
// per call, in "records/s". The first apply error stops all appenders and
// fails the benchmark. Tear down after Run returns: the timer is already
// stopped.
func Run(b *testing.B, apply func() error, appenders int) {
	b.Helper()
	RunUnit(b, apply, appenders, "records/s")
}

// RunUnit is Run reporting throughput under the given unit name
// ("events/s").
func RunUnit(b *testing.B, apply func() error, appenders int, unit string) {
	b.Helper()
	RunLoad(b, apply, appenders, Load{Unit: unit})
}

// Load describes what one call of a benchmark's apply acknowledges, for
// the metrics RunLoad reports.
type Load struct {
	// Unit names the throughput, a plural per second ("records/s",
	// "events/s"); the CPU metric is named after its singular.
	Unit string
	// PerCall is the number of records (events) one call acknowledges
	// (default 1).
	PerCall int
	// RecordBytes is the payload size of one record. If set, RunLoad
	// reports write amplification: the bytes this process wrote to the
	// block device (/proc/self/io write_bytes, Linux) during the run and
	// Settle, divided by the payload bytes acknowledged and by Nodes.
	RecordBytes int
	// Nodes is the number of replicas in the process, each of which
	// writes every acknowledged byte (default 1).
	Nodes int
	// Settle, if set, runs after the timed section and before the bytes
	// written are read: it makes durable what the run acknowledged but
	// left in memory (a state machine's unflushed table), so write
	// amplification counts every byte the acknowledged records cost.
	Settle func()
}

// RunLoad is the timed section of Run for calls that each acknowledge
// load.PerCall records. It reports:
//
//   - load.Unit: records acknowledged per second of wall time;
//   - "p50-ms", "p99-ms": nearest-rank quantiles of the calls' latencies;
//   - "cpu-us/<record>": user + system CPU time of the whole process
//     (getrusage, every node and goroutine in it) per record acknowledged;
//   - "write-amp" (when load.RecordBytes is set and /proc/self/io is
//     readable): bytes written to the device per payload byte
//     acknowledged, per node.
func RunLoad(b *testing.B, apply func() error, appenders int, load Load) {
	b.Helper()
	if appenders < 1 {
		appenders = 1
	}
	load.PerCall = max(load.PerCall, 1)
	load.Nodes = max(load.Nodes, 1)
	n := int64(b.N)
	lat := make([]time.Duration, n)
	var (
		next     atomic.Int64
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	runtime.GC() // the previous run's garbage is not this run's CPU
	written0, ioErr := WrittenBytes()
	cpu0 := CPUTime()
	b.ResetTimer()
	b.StartTimer()
	start := time.Now()
	for g := 0; g < appenders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := apply()
				lat[i] = time.Since(t0)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("apply #%d: %w", i, err) })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := CPUTime() - cpu0
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	records := float64(n) * float64(load.PerCall)
	if load.Settle != nil {
		load.Settle()
	}
	written1, ioErr1 := WrittenBytes()
	b.ReportMetric(records/elapsed.Seconds(), load.Unit)
	b.ReportMetric(float64(Percentile(lat, 0.50))/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(Percentile(lat, 0.99))/float64(time.Millisecond), "p99-ms")
	singular := strings.TrimSuffix(strings.TrimSuffix(load.Unit, "/s"), "s")
	b.ReportMetric(float64(cpu.Microseconds())/records, "cpu-us/"+singular)
	if load.RecordBytes > 0 && ioErr == nil && ioErr1 == nil {
		acked := records * float64(load.RecordBytes) * float64(load.Nodes)
		b.ReportMetric(float64(written1-written0)/acked, "write-amp")
	}
}

// CPUTime returns the user + system CPU time this process has used
// (getrusage RUSAGE_SELF).
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// WrittenBytes returns the bytes this process has caused to be written
// to storage (write_bytes of /proc/self/io: pages dirtied, counted once
// per write-back, so a 4 KiB page synced after every small append counts
// 4 KiB each time).
func WrittenBytes() (uint64, error) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("rawraftbench: no write_bytes in /proc/self/io")
}

// Percentile returns the nearest-rank p-quantile (0 < p <= 1) of lat,
// sorting lat in place. It returns 0 for an empty slice.
func Percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	k := int(math.Ceil(p*float64(len(lat)))) - 1
	k = min(max(k, 0), len(lat)-1)
	return lat[k]
}
