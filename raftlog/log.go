package raftlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/logging"
	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/state"
)

// Mux service bytes: node-to-node calls, then one per shard.
const (
	serviceRPC   byte = 0
	serviceShard byte = 1 // + shard
)

// Log is a partitioned, replicated, durable log. All methods are safe for
// concurrent use.
type Log struct {
	cfg       Config
	advertise string

	mux    *mux.Mux
	rpc    *mux.Server
	client *mux.Client
	shards []*shard
	router *route.Router
	logger *slog.Logger
	// startState is what the node says to probes while and after it
	// starts (rejoin.go).
	startState startState
	tls        *clusterTLS // nil without TLS
	// ident is raftlog.json as stored; its ClusterID is the identity this
	// node knows before (or without) applying it (clusterid.go).
	identMu sync.Mutex
	ident   identity
	balance balancer // moves leaders between voters (balance.go)
	stats   logStats // counters of the append path (stats.go)
	// clientCalls holds a token per client call being served
	// (Config.MaxClientCalls); nil: no limit.
	clientCalls chan struct{}

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
}

// shard is one raft group on this node: its raft instance and routing
// (route.Shard), its state engine and its stores.
type shard struct {
	*route.Shard
	engine    *state.Engine
	store     groupLog
	logs      raft.LogStore      // store behind a cache
	snaps     raft.SnapshotStore // markers and full copies
	hasState  bool               // raft state on disk when the node opened
	transport raft.Transport
	observer  *raft.Observer
	// leaderChanges counts the leader changes this node observed;
	// entrySizes the appends per raft entry this node proposed as leader
	// (stats.go).
	leaderChanges atomic.Uint64
	entrySizes    *core.Histogram
	// logWrites is the raft log store's write latency (checkedLog).
	logWrites *core.Histogram
	obsCh     chan raft.Observation
	// raftStarted is closed once Raft is set (startShard).
	raftStarted chan struct{}
}

// identity is written to Dir on first start and checked on later starts.
type identity struct {
	Format     int    `json:"format"`
	NodeID     string `json:"node_id"`
	Partitions int    `json:"partitions"`
	Shards     int    `json:"groups"` // named before shards were
	// ClusterID is the cluster's identity once this node learned it
	// (clusterid.go); files written before it existed have none.
	ClusterID string `json:"cluster_id,omitempty"`
}

// Open starts the log in cfg.Dir: it bootstraps a new single-node log or a
// cluster from cfg.Peers on first start, joins through cfg.Join, or reopens
// what is on disk. A node with no state and Peers waits for a majority of
// them before forming a cluster, and rejoins one that exists (rejoin.go);
// ctx bounds that wait and the join.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	ident, err := checkIdentity(&cfg)
	if err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, closing: make(chan struct{}), ident: ident, stats: newLogStats()}
	if cfg.MaxClientCalls > 0 {
		l.clientCalls = make(chan struct{}, cfg.MaxClientCalls)
	}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	if cfg.Addr != "" || cfg.Listener != nil {
		ln := cfg.Listener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
				return nil, fmt.Errorf("raftlog: listen: %w", err)
			}
		}
		l.advertise = cfg.Advertise
		if l.advertise == "" {
			l.advertise = ln.Addr().String()
		}
		sln, dial, err := l.secure(ln, cfg.Dialer)
		if err != nil {
			ln.Close()
			return nil, err
		}
		l.mux = mux.New(sln, dial)
		l.mux.SetLimits(cfg.muxLimits())
	}
	l.logger = cfg.Logger.With("logger", "raftlog", "node", cfg.NodeID)
	logger := logging.Hclog(cfg.Logger.With("node", cfg.NodeID), "raftlog")
	var routed []*route.Shard
	for si := 0; si < cfg.Shards; si++ {
		s, err := l.openShard(Shard(si), logger)
		if err != nil {
			return nil, err
		}
		l.shards = append(l.shards, s)
		routed = append(routed, s.Shard)
	}
	if err := l.checkStoredClusterID(); err != nil {
		return nil, err
	}
	if l.mux != nil {
		l.client = mux.NewClient(l.mux, serviceRPC)
	}
	l.router = route.New(route.Config{
		Self: cfg.NodeID, Partitions: cfg.Partitions, Shards: routed, Client: l.client,
		Validate: l.validate, Closing: l.closing, Logger: l.logger, Probe: l.probeState, Authorize: l.authorize,
		ServeClient: l.serveClient,
	})
	if l.mux != nil {
		l.rpc = mux.NewServer(l.mux.Listen(serviceRPC), l.router.Handle)
		l.goRun(func() { l.mux.Serve() })
		l.goRun(func() { l.rpc.Serve() })
		if l.tls != nil {
			l.goRun(func() { l.tls.watch(l.closing) })
		}
	}
	// Until start returns, no raft transport is registered on the mux: a
	// node that is deciding whether to form or rejoin a cluster answers
	// probes and nothing else, and cannot vote (rejoin.go).
	if err := l.start(ctx, logger); err != nil {
		return nil, err
	}
	l.router.Running()
	for _, s := range l.shards {
		s.Batcher.Start()
	}
	l.goRun(l.maintainClusterID)
	if l.cfg.RetentionTick > 0 {
		for _, s := range l.shards {
			l.goRun(func() { l.tickRetention(s) })
		}
	}
	if l.cfg.ScavengeInterval > 0 {
		l.goRun(l.runScavenger)
	}
	l.startBalancer()
	if l.mux == nil {
		// The embedded single node elects itself within milliseconds:
		// return a log that is ready to append.
		for _, s := range l.shards {
			for {
				changed := s.LeaderWait() // before the check, so no change is missed
				if s.Raft.State() == raft.Leader {
					break
				}
				select {
				case <-changed:
				case <-ctx.Done():
					return nil, fmt.Errorf("%w: shard %d: %w", ErrNoLeader, s.ID, ctx.Err())
				}
			}
		}
	}
	ok = true
	return l, nil
}

func (l *Log) goRun(fn func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn()
	}()
}

// checkIdentity checks raftlog.json against cfg, writing it on first
// start, and returns what it holds.
func checkIdentity(cfg *Config) (identity, error) {
	path := filepath.Join(cfg.Dir, "raftlog.json")
	want := identity{Format: 1, NodeID: cfg.NodeID, Partitions: cfg.Partitions, Shards: cfg.Shards}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return want, writeIdentity(cfg.Dir, want)
	}
	if err != nil {
		return identity{}, fmt.Errorf("raftlog: %w", err)
	}
	var have identity
	if err := json.Unmarshal(b, &have); err != nil {
		return identity{}, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	cmp := have
	cmp.ClusterID = "" // learned, not configured
	if cmp != want {
		return identity{}, fmt.Errorf("%w: %s holds %+v, configured %+v", ErrConfig, path, have, want)
	}
	return have, nil
}

// writeIdentity replaces raftlog.json in dir with id, durably.
func writeIdentity(dir string, id identity) error {
	path := filepath.Join(dir, "raftlog.json")
	b, _ := json.MarshalIndent(id, "", "  ")
	tmp := path + ".tmp"
	if err := state.WriteFileSync(tmp, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if err := state.SyncDir(dir); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	return nil
}

func (l *Log) raftConfig(logger hclog.Logger) *raft.Config {
	c := l.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.Logger = logger
	rc.NoSnapshotRestoreOnStart = true // the FSM's state is durable by itself
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 128
	if l.mux == nil {
		// Alone and unreachable, the node cannot be partitioned from a
		// quorum: elect itself at once on start instead of after 1 s.
		rc.HeartbeatTimeout = 50 * time.Millisecond
		rc.ElectionTimeout = 50 * time.Millisecond
		rc.LeaderLeaseTimeout = 50 * time.Millisecond
	}
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	set(&rc.HeartbeatTimeout, c.HeartbeatTimeout)
	set(&rc.ElectionTimeout, c.ElectionTimeout)
	set(&rc.LeaderLeaseTimeout, c.LeaderLeaseTimeout)
	// Followers learn of commits from the next AppendEntries; when the
	// leader is idle that is CommitTimeout later (raft's default 50 ms), which
	// a read-your-writes wait on a follower would pay on every write.
	rc.CommitTimeout = 10 * time.Millisecond
	set(&rc.CommitTimeout, c.CommitTimeout)
	set(&rc.SnapshotInterval, c.SnapshotInterval)
	if c.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = c.SnapshotThreshold
	}
	rc.TrailingLogs = maxTrailingLogs // until compactAfterFlushes sizes it
	if c.TrailingLogs > 0 {
		rc.TrailingLogs = c.TrailingLogs
	}
	if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	return rc
}

// openShard opens shard si's stores; startShard starts its raft.
func (l *Log) openShard(si Shard, logger hclog.Logger) (*shard, error) {
	dir := filepath.Join(l.cfg.Dir, fmt.Sprintf("g%d", si))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	s := &shard{Shard: &route.Shard{ID: si}, entrySizes: core.NewHistogram(entrySizeBounds...), raftStarted: make(chan struct{})}
	var err error
	s.engine, err = state.Open(state.Options{
		Path: filepath.Join(dir, "state.db"), LegacyPath: filepath.Join(dir, "fsm.db"), Shard: si, Partitions: l.cfg.Partitions, Shards: l.cfg.Shards,
		IDRetention: l.cfg.IDRetention, FlushRecords: l.cfg.flushRecords, SegmentBytes: l.cfg.stateSegmentBytes, FailRestore: l.cfg.failRestore, FS: l.cfg.stateFS,
		ScrubRate: l.cfg.ScrubBytesPerSecond, ScrubInterval: l.cfg.ScrubInterval, DigestEvery: l.cfg.ApplyDigestEvery, ApplyTrace: l.cfg.ApplyTrace,
		OnStopApplies: func(err error) {
			// The replica cannot apply: stop its raft, so that a leader
			// gives the leadership up; it serves reads until it is wiped.
			l.logger.Error("raftlog: stopping the shard's raft on this node: its state is damaged", "shard", si, "err", err)
			s.engine.Halt()
			select {
			case <-s.raftStarted:
				s.Raft.Shutdown()
			case <-l.closing:
			}
		},
		// Damage found any other way (a read, the scrub, a full copy being
		// sent): this node must not lead the shard.
		OnDamage: func(error) {
			select {
			case <-s.raftStarted:
				l.stepDownIfDamaged(s)
			case <-l.closing:
			}
		},
		Logger: l.logger.With("shard", si),
	})
	if err != nil {
		return nil, err
	}
	s.Applied = s.engine.Applied
	s.store, err = openShardLog(dir, &l.cfg, logger)
	if err != nil {
		s.engine.Close()
		return nil, fmt.Errorf("raftlog: open raft log: %w", err)
	}
	checked, err := newCheckedLog(s.store, l.logger.With("shard", si))
	if err != nil {
		s.store.Close()
		s.engine.Close()
		return nil, err
	}
	s.store = checked
	s.logWrites = checked.writes
	closeStores := func() {
		s.store.Close()
		s.engine.Close()
	}
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger)
	if err != nil {
		closeStores()
		return nil, fmt.Errorf("raftlog: snapshot store: %w", err)
	}
	if err := s.engine.CatchUpToSnapshot(fileSnaps); err != nil {
		closeStores()
		return nil, fmt.Errorf("raftlog: shard %d: %w", si, err)
	}
	if err := checkLogCoversState(s.store, fileSnaps, s.engine.Applied(), l.logger.With("shard", si)); err != nil {
		closeStores()
		return nil, fmt.Errorf("raftlog: shard %d (%s): %w", si, dir, err)
	}
	s.snaps = state.NewSnapshotStore(fileSnaps, s.engine)
	if s.logs, err = raft.NewLogCache(1024, s.store); err != nil {
		closeStores()
		return nil, err
	}
	if s.hasState, err = raft.HasExistingState(s.logs, s.store, s.snaps); err != nil {
		closeStores()
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	return s, nil
}

// startShard starts s's raft instance, first bootstrapping it with
// servers if it has no state and servers is not nil. Only now is its raft
// transport registered on the mux.
func (l *Log) startShard(s *shard, servers []raft.Server, logger hclog.Logger) error {
	si := s.ID
	var guard *guardedStream
	if l.mux != nil {
		guard = &guardedStream{StreamLayer: l.mux.StreamLayer(serviceShard + byte(si)), l: l, shard: si}
		s.transport = serialTransport{raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  guard,
			MaxPool: 4,
			Timeout: 10 * time.Second,
			Logger:  logger,
			// No pipelining: hashicorp/raft's pipeline can deadlock when a
			// follower answers Success=false (or an error) while the next
			// request is being sent. Its decoder then exits, the sender
			// parks on the in-flight channel for ever, and that follower
			// gets heartbeats but no entry again; the leader's Shutdown
			// waits on it (hashicorp/raft#612; TestCloseAllNodesAtOnceUnderLoad
			// hung here). The batcher keeps one entry in flight, so
			// pipelining bought little.
			MaxRPCsInFlight: 1,
		})}
	} else {
		// A single node without network: nothing else will ever dial it.
		_, s.transport = raft.NewInmemTransport(raft.ServerAddress("local:" + l.cfg.NodeID))
	}
	rc := l.raftConfig(logger)
	if !s.hasState && servers != nil {
		if err := raft.BootstrapCluster(rc, s.logs, s.store, s.snaps, s.transport, raft.Configuration{Servers: servers}); err != nil {
			return fmt.Errorf("raftlog: bootstrap shard %d: %w", si, err)
		}
	}
	var err error
	s.Raft, err = raft.NewRaft(rc, state.NewFSM(s.engine), s.logs, s.store, s.snaps, s.transport)
	if err != nil {
		return fmt.Errorf("raftlog: start shard %d: %w", si, err)
	}
	close(s.raftStarted)
	if guard != nil {
		guard.raft.Store(s.Raft)
	}
	s.obsCh = make(chan raft.Observation, 16)
	s.observer = raft.NewObserver(s.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.Raft.RegisterObserver(s.observer)
	l.goRun(func() {
		for {
			select {
			case o := <-s.obsCh:
				if lo, ok := o.Data.(raft.LeaderObservation); ok {
					l.logger.Info("raftlog: leader changed", "shard", s.ID, "leader", string(lo.LeaderID), "addr", string(lo.LeaderAddr))
				}
				s.leaderChanges.Add(1)
				s.LeaderChanged()
				l.stepDownIfDamaged(s)
			case <-l.closing:
				return
			}
		}
	})
	l.goRun(func() { l.compactAfterFlushes(s) })
	s.Batcher = route.NewBatcher(s.Raft, route.BatcherConfig{
		MaxEntryRequests: l.cfg.MaxEntryRequests, MaxEntryBytes: l.cfg.MaxEntryBytes,
		Linger: l.cfg.Linger, MaxInflight: l.cfg.MaxInflight, CohortWait: l.cfg.CohortWait,
		PipelineBytes: l.cfg.PipelineBytes,
		EntrySizes:    s.entrySizes,
		Refuse:        s.engine.Full,
	})
	return nil
}

// stepDownIfDamaged hands the leadership of s to another voter if this node
// leads it while its state is damaged: a damaged leader cannot send a full
// copy to a follower that needs one (a wiped node rejoining would wait for
// ever) and serves no record of the damaged range. Its raft log is intact,
// so it goes on voting; it is unhealthy (ShardStatus.Damage) until it is
// wiped and rejoins.
func (l *Log) stepDownIfDamaged(s *shard) {
	err := s.engine.Damage()
	if err == nil || l.isClosed() || s.Raft.State() != raft.Leader {
		return
	}
	if !hasOtherVoter(s.Raft, raft.ServerID(l.cfg.NodeID)) {
		return // a single voter has nobody to hand the leadership to
	}
	l.goRun(func() {
		l.logger.Warn("raftlog: handing leadership away: this node's state is damaged", "shard", s.ID, "err", err)
		f := s.Raft.LeadershipTransfer()
		done := make(chan error, 1)
		go func() { done <- f.Error() }() // raft may never answer once it is shut down
		select {
		case err := <-done:
			if err != nil {
				l.logger.Warn("raftlog: leadership hand-off of a damaged shard failed; retried at the next leader change", "shard", s.ID, "err", err)
			}
		case <-l.closing:
		}
	})
}

// checkLogCoversState refuses to start on a raft log that ends below the
// index the state file has applied (raft's snapshots included): entries
// the state holds, acknowledged ones among them, are gone from the log, so
// it was damaged, truncated or replaced. Raft would run on the shorter log,
// hand this node's vote to a peer missing those entries, and never repair
// the gap.
func checkLogCoversState(logs raft.LogStore, snaps raft.SnapshotStore, applied uint64, logger *slog.Logger) error {
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raftlog: read the raft log: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("raftlog: list snapshots: %w", err)
	}
	if len(metas) > 0 {
		// A log store that refuses gaps (raft-wal) is emptied when a
		// snapshot is installed, and keeps a tail of the entries it
		// applied when one is taken: a non-empty one reaches its newest
		// snapshot. One that ends below it either was being emptied
		// after an install when the node stopped (the newest snapshot is
		// a full copy from a leader: the node was behind, and raft would
		// have dropped those entries), or lost its tail: raft-wal reads
		// damage in its last segment as a torn write and drops everything
		// from there, entries this node acknowledged among them
		// (RELIABILITY.md, bug 13).
		if m, ok := logs.(raft.MonotonicLogStore); ok && m.IsMonotonic() && last > 0 && last < metas[0].Index {
			full, err := state.IsFullCopy(snaps, metas[0].ID)
			if err != nil {
				return fmt.Errorf("raftlog: read snapshot: %w", err)
			}
			if !full {
				return fmt.Errorf("%w: the raft log ends at index %d, below its newest snapshot at index %d: "+
					"it lost its last entries (damaged or truncated). Recovery: move this node's data "+
					"directory aside and start the node empty, so that it rejoins and copies the state from its peers",
					ErrCorrupt, last, metas[0].Index)
			}
			first, err := logs.FirstIndex()
			if err != nil {
				return fmt.Errorf("raftlog: read the raft log: %w", err)
			}
			if err := logs.DeleteRange(first, last); err != nil {
				return fmt.Errorf("raftlog: drop the raft log's entries below an installed snapshot: %w", err)
			}
			logger.Info("raftlog: dropped the raft log's entries below the installed snapshot (a stop interrupted the install)",
				"first", first, "last", last, "snapshot", metas[0].Index)
			last = 0
		}
		last = max(last, metas[0].Index)
	}
	if applied > last {
		return fmt.Errorf("%w: the raft log ends at index %d but the state file has applied index %d: "+
			"the log lost entries (damaged, truncated or replaced). Recovery: move this node's data "+
			"directory aside and start the node empty, so that it rejoins and copies the state from its peers",
			ErrCorrupt, last, applied)
	}
	// Raft hands the state machine every entry after its last snapshot
	// again (the state machine skips those it holds): each must be intact.
	from := uint64(1)
	if len(metas) > 0 {
		from = metas[0].Index + 1
	}
	return verifyLogFrom(logs, from)
}

// Close stops the node: it first hands the leadership of the shards it
// leads to other voters (Config.HandoffTimeout), then appends in progress
// fail with ErrClosed (their outcome unknown), shards shut down and files
// are closed. Close is idempotent.
func (l *Log) Close() error {
	var errs []error
	l.closeOnce.Do(func() {
		// While everything still runs: appends that reach this node
		// during the hand-off are retried on the new leader.
		l.stopBalancer()
		l.handOff()
		close(l.closing)
		// Batchers first, while raft runs: their in-flight entries resolve
		// (commit or leadership loss), and none is left in raft's apply
		// queue at shutdown, where its future would never resolve.
		for _, s := range l.shards {
			if s.Batcher != nil {
				s.Batcher.Close()
			}
		}
		// Shards shut down concurrently, and each closes its transport as
		// soon as its raft is down. A transport left open after its raft
		// stopped still accepts a leader's appends and never answers them;
		// that leader's shutdown then waits on a pipeline that can never
		// drain. Closed one by one, two nodes leading different shards
		// could each wait on the other's open transport for ever.
		stuck := make([]bool, len(l.shards))
		shardErrs := make([]error, len(l.shards))
		var wg sync.WaitGroup
		for i, s := range l.shards {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stuck[i], shardErrs[i] = l.shutdownShard(s)
			}()
		}
		wg.Wait()
		errs = append(errs, shardErrs...)
		if l.rpc != nil {
			errs = append(errs, l.rpc.Close())
		}
		if l.client != nil {
			errs = append(errs, l.client.Close())
		}
		if l.mux != nil {
			errs = append(errs, l.mux.Close())
		}
		l.wg.Wait()
		for i, s := range l.shards {
			if stuck[i] {
				// Raft goroutines may still read this shard's store.
				continue
			}
			if s.store != nil {
				errs = append(errs, s.store.Close())
			}
			if s.engine != nil {
				errs = append(errs, s.engine.Close())
			}
		}
	})
	return errors.Join(errs...)
}

// shutdownWait bounds how long Close waits for one shard's raft to stop.
const shutdownWait = 30 * time.Second

// shutdownShard stops s's raft, then closes its transport. If raft has not
// stopped within shutdownWait (a replication goroutine stuck on a peer that
// never answers), it logs the fact, closes the transport anyway and reports
// stuck: the caller then leaves the shard's stores open, since raft may
// still read them, rather than hang the process's shutdown for ever.
func (l *Log) shutdownShard(s *shard) (stuck bool, err error) {
	if s.Raft != nil {
		s.Raft.DeregisterObserver(s.observer)
		s.engine.Halt() // an FSM goroutine held by damage would block the shutdown
		done := make(chan error, 1)
		f := s.Raft.Shutdown()
		go func() { done <- f.Error() }()
		t := time.NewTimer(shutdownWait)
		defer t.Stop()
		select {
		case err = <-done:
		case <-t.C:
			stuck = true
			err = fmt.Errorf("raftlog: shard %d: raft did not shut down within %v", s.ID, shutdownWait)
			l.cfg.Logger.Error("raft shutdown is stuck; closing its transport and leaving its stores open", "shard", int(s.ID), "waited", shutdownWait)
		}
	}
	if nt, ok := s.transport.(interface{ CloseStreams() }); ok {
		nt.CloseStreams() // Close alone leaves pooled connections open
	}
	if c, ok := s.transport.(io.Closer); ok {
		c.Close()
	}
	return stuck, err
}

func (l *Log) isClosed() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// Logger is the log's logger (Config.Logger, or the default).
func (l *Log) Logger() *slog.Logger { return l.cfg.Logger }

// Dir is the node's data directory (Config.Dir).
func (l *Log) Dir() string { return l.cfg.Dir }

// NodeID is this node's ID.
func (l *Log) NodeID() string { return l.cfg.NodeID }

// Addr is the address other nodes reach this node at ("" without network).
func (l *Log) Addr() string { return l.advertise }

// Partitions is the number of partitions.
func (l *Log) Partitions() int { return l.cfg.Partitions }

// Shards is the number of shards (raft groups).
func (l *Log) Shards() int { return l.cfg.Shards }

// Partition is the partition key routes to: FNV-1a of the key modulo the
// number of partitions. It never changes for a given key and partition count.
func (l *Log) Partition(key string) Partition { return partitionOf(key, l.cfg.Partitions) }

func partitionOf(key string, partitions int) Partition {
	h := fnv.New64a()
	h.Write([]byte(key))
	return Partition(h.Sum64() % uint64(partitions))
}

// ShardOf is the shard hosting partition p.
func (l *Log) ShardOf(p Partition) Shard { return Shard(int(p) % l.cfg.Shards) }

// shardOf is the shard of partition p, or ErrUnknownPartition.
func (l *Log) shardOf(p Partition) (*shard, error) {
	if p < 0 || int(p) >= l.cfg.Partitions {
		return nil, fmt.Errorf("%w: %d (partitions 0..%d)", ErrUnknownPartition, p, l.cfg.Partitions-1)
	}
	return l.shards[int(p)%l.cfg.Shards], nil
}

// shard is shard s, or ErrUnknownPartition.
func (l *Log) shard(s Shard) (*shard, error) {
	if s < 0 || int(s) >= len(l.shards) {
		return nil, fmt.Errorf("%w: shard %d (shards 0..%d)", ErrUnknownPartition, s, len(l.shards)-1)
	}
	return l.shards[s], nil
}
