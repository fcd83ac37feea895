package faulttest

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	flagDuration = flag.Duration("fault.duration", 0, "run the nemesis this long (long mode); 0: short mode")
	flagSeed     = flag.Uint64("fault.seed", 0, "nemesis and workload seed (0: from the clock, logged)")
	flagRate     = flag.Float64("fault.rate", 0, "appends/s over all workers (0: the mode's default)")
	flagGroups   = flag.Int("fault.groups", 0, "raft groups (0: 1 in long mode, 1 or 2 by seed in short mode)")
	flagKinds    = flag.String("fault.kinds", "", "comma-separated fault kinds (default: all)")
	flagKeep     = flag.String("fault.dir", "", "keep the run's data and logs in this directory")
	flagDiskSize = flag.Int64("fault.disksize", 1<<30, "bytes of each node's own tmpfs, mounted when run as root, for fill-disk (0: no tmpfs)")
)

// longOnlyKinds are left out of the short mode (CI) unless -fault.kinds
// names them; the long mode runs every kind. Measured on 2026-11-29
// (RELIABILITY.md): the bbolt state file crashes the node when damaged,
// truncated or on a full disk (issue #16's state engine, segments with
// checksums and a typed error on a full disk, is built for these), and a
// flipped byte in a raft log entry not yet in the state file diverges the
// replica (bug 9); old-region damage can land there too on a young log.
// truncate-log (refused, wiped, rejoined) and wipe-node pass and run in
// CI. Move a kind into the short mode once its runs pass.
var longOnlyKinds = []string{FaultCorruptLogOld, FaultCorruptLogNew, FaultCorruptState, FaultTruncateState, FaultFillDisk}

// TestFaultInjection runs the suite: short mode in CI (a couple of minutes
// of faults), long mode with -fault.duration. It fails if any safety
// figure is not zero, if a node process exits on its own, or if writes do
// not resume after a fault.
func TestFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault-injection suite takes minutes")
	}
	long := *flagDuration > 0
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	dir := *flagKeep
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "esraft-fault-*")
		require.NoError(t, err)
	} else {
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	t.Logf("seed %d (replay with -fault.seed=%d), run directory %s", seed, seed, dir)

	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bin, err := BuildNode(bctx, dir)
	bcancel()
	require.NoError(t, err)

	cfg := Config{
		Cluster: ClusterConfig{
			Binary: bin, Dir: dir, Nodes: 3, Partitions: 8, Groups: 1,
			// Failover in one to three seconds, yet no spurious elections on
			// a loaded 2-core machine.
			Heartbeat: time.Second, Election: time.Second, Lease: 500 * time.Millisecond,
			// Snapshots often and a short raft log tail, so that restarted
			// and partitioned followers catch up from full state copies too.
			SnapshotThreshold: 256, SnapshotInterval: 2 * time.Second, TrailingLogs: 64,
			// A scrub pass every few seconds, as an operator who runs one
			// after every disk incident: state damage a node started with
			// is found, and repaired, before the next disk fault.
			ScrubInterval: 3 * time.Second,
		},
		Workload: WorkloadConfig{
			Workers: 12, StreamsPerWorker: 16, HotStreams: 4, HotFraction: 0.2,
			Rate: 400, AppendTimeout: 3 * time.Second, MaxEvents: 3,
		},
		Seed:         seed,
		Duration:     100 * time.Second,
		Quiet:        [2]time.Duration{500 * time.Millisecond, 2 * time.Second},
		ReadInterval: 100 * time.Millisecond,
		// Sessions shorter than most pauses (2.5-5 s): a paused member
		// comes back a zombie whose commits must be fenced off.
		ConsumerGroup: &ConsumerGroupWorkload{SessionTimeout: 2 * time.Second, CatchUp: time.Minute},
	}
	if !long {
		// Short runs alternate, by seed, between one raft group and two
		// (partitions led from different nodes).
		cfg.Cluster.Groups = 1 + int(seed%2)
	}
	if long {
		cfg.Duration = *flagDuration
		cfg.Workload.Rate = 200
		cfg.Quiet = [2]time.Duration{time.Second, 5 * time.Second}
	}
	if *flagRate > 0 {
		cfg.Workload.Rate = *flagRate
	}
	if *flagGroups > 0 {
		cfg.Cluster.Groups = *flagGroups
	}
	kinds := Kinds()
	if *flagKinds != "" {
		kinds = strings.Split(*flagKinds, ",")
	} else if !long {
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return slices.Contains(longOnlyKinds, k) })
	}
	if slices.Contains(kinds, FaultFillDisk) {
		// A full disk needs a disk of the node's own: a tmpfs, which only
		// root can mount (CI runs as root).
		if os.Geteuid() == 0 && *flagDiskSize > 0 {
			cfg.Cluster.DiskSize = *flagDiskSize
		} else {
			kinds = slices.DeleteFunc(kinds, func(k string) bool { return k == FaultFillDisk })
			t.Logf("%s left out: it needs a tmpfs per node, mounted as root (-fault.disksize > 0)", FaultFillDisk)
		}
	}
	require.NotEmpty(t, kinds, "no fault kind to run")
	cfg.Kinds = kinds

	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
		defer cancel()
	}
	rep, err := Run(ctx, cfg, t.Logf)
	require.NoError(t, err)
	t.Logf("report (also %s):\n%s", filepath.Join(dir, "report.json"), rep)

	require.Empty(t, rep.Violations(), "safety violations; node logs and nemesis.log in %s", dir)
	require.Zero(t, rep.FaultErrors, "faults the cluster did not recover from; see %s/nemesis.log", dir)
	require.Zero(t, rep.Unresumed, "faults after which writes never resumed")
	require.NotZero(t, rep.Acked)
	require.NotZero(t, rep.ApplyDigests.Windows, "no window of raft indexes applied whole by two nodes: the apply digests compared nothing")
	require.NotZero(t, rep.Faults)
	require.NotNil(t, rep.Group, "the consumer group was checked")
	require.NotZero(t, rep.Group.Handled)
	require.NotZero(t, rep.Group.CommitsAcked)
	if *flagKeep == "" && !t.Failed() {
		os.RemoveAll(dir)
	}
}
