package raftlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/logging"
	"github.com/esraft/esraft/internal/mux"
)

// Mux service bytes: node-to-node calls, then one per raft group.
const (
	serviceRPC       byte = 0
	serviceRaftGroup byte = 1 // + group
)

// Log is a partitioned, replicated, durable log. All methods are safe for
// concurrent use.
type Log struct {
	cfg       Config
	advertise string

	mux    *mux.Mux
	rpc    *mux.Server
	client *mux.Client
	groups []*group

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
}

// group is one raft group on this node.
type group struct {
	id        int
	raft      *raft.Raft
	fsm       *fsm
	store     groupLog
	transport raft.Transport
	batcher   *batcher
	leaderSig signal // woken on every leader change seen by this node
	observer  *raft.Observer
	obsCh     chan raft.Observation
}

// identity is written to Dir on first start and checked on later starts.
type identity struct {
	Format     int    `json:"format"`
	NodeID     string `json:"node_id"`
	Partitions int    `json:"partitions"`
	Groups     int    `json:"groups"`
}

// Open starts the log in cfg.Dir: it bootstraps a new single-node log or a
// cluster from cfg.Peers on first start, joins through cfg.Join, or reopens
// what is on disk. ctx bounds the join.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	if err := checkIdentity(&cfg); err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, closing: make(chan struct{})}
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
		l.mux = mux.New(ln, cfg.Dialer)
	}
	logger := logging.Hclog(cfg.Logger.With("node", cfg.NodeID), "raftlog")
	fresh := false
	for gi := 0; gi < cfg.Groups; gi++ {
		g, isNew, err := l.openGroup(gi, logger)
		if err != nil {
			return nil, err
		}
		fresh = fresh || isNew
		l.groups = append(l.groups, g)
	}
	if l.mux != nil {
		l.rpc = mux.NewServer(l.mux.Listen(serviceRPC), l.handleRPC)
		l.client = mux.NewClient(l.mux, serviceRPC)
		l.goRun(func() { l.mux.Serve() })
		l.goRun(func() { l.rpc.Serve() })
	}
	for _, g := range l.groups {
		g.batcher.start()
	}
	if cfg.Join != "" && fresh {
		if err := l.join(ctx); err != nil {
			return nil, err
		}
	}
	if l.mux == nil {
		// The embedded single node elects itself within milliseconds:
		// return a log that is ready to append.
		for _, g := range l.groups {
			for {
				changed := g.leaderSig.wait()
				if g.raft.State() == raft.Leader {
					break
				}
				select {
				case <-changed:
				case <-ctx.Done():
					return nil, fmt.Errorf("%w: group %d: %w", ErrNoLeader, g.id, ctx.Err())
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

func checkIdentity(cfg *Config) error {
	path := filepath.Join(cfg.Dir, "raftlog.json")
	want := identity{Format: 1, NodeID: cfg.NodeID, Partitions: cfg.Partitions, Groups: cfg.Groups}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, _ = json.MarshalIndent(want, "", "  ")
		tmp := path + ".tmp"
		if err := writeFileSync(tmp, bytes.NewReader(b)); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		return syncDir(cfg.Dir)
	}
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	var have identity
	if err := json.Unmarshal(b, &have); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if have != want {
		return fmt.Errorf("%w: %s holds %+v, configured %+v", ErrConfig, path, have, want)
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
	if c.TrailingLogs > 0 {
		rc.TrailingLogs = c.TrailingLogs
	}
	if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	return rc
}

// openGroup opens group gi's stores and starts its raft instance. isNew
// reports that the group had no state before.
func (l *Log) openGroup(gi int, logger hclog.Logger) (*group, bool, error) {
	dir := filepath.Join(l.cfg.Dir, fmt.Sprintf("g%d", gi))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("raftlog: %w", err)
	}
	g := &group{id: gi}
	var err error
	g.fsm, err = openFSM(filepath.Join(dir, "fsm.db"), gi, l.cfg.Partitions, l.cfg.Groups, l.cfg.IDRetention)
	if err != nil {
		return nil, false, err
	}
	if l.cfg.flushRecords > 0 {
		g.fsm.flushAtRecords = l.cfg.flushRecords
	}
	g.store, err = openGroupLog(dir, &l.cfg, logger)
	if err != nil {
		g.fsm.close()
		return nil, false, fmt.Errorf("raftlog: open raft log: %w", err)
	}
	closeStores := func() {
		g.store.Close()
		g.fsm.close()
	}
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger)
	if err != nil {
		closeStores()
		return nil, false, fmt.Errorf("raftlog: snapshot store: %w", err)
	}
	g.fsm.failRestore = l.cfg.failRestore
	if err := g.fsm.catchUpToSnapshot(fileSnaps); err != nil {
		closeStores()
		return nil, false, fmt.Errorf("raftlog: group %d: %w", gi, err)
	}
	snaps := &snapshotStore{SnapshotStore: fileSnaps, fsm: g.fsm}
	logs, err := raft.NewLogCache(1024, g.store)
	if err != nil {
		closeStores()
		return nil, false, err
	}
	var self raft.ServerAddress
	if l.mux != nil {
		g.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  l.mux.StreamLayer(serviceRaftGroup + byte(gi)),
			MaxPool: 4,
			Timeout: 10 * time.Second,
			Logger:  logger,
		})
		self = raft.ServerAddress(l.advertise)
	} else {
		// A single node without network: nothing else will ever dial it.
		self, g.transport = raft.NewInmemTransport(raft.ServerAddress("local:" + l.cfg.NodeID))
	}
	rc := l.raftConfig(logger)
	has, err := raft.HasExistingState(logs, g.store, snaps)
	if err != nil {
		closeStores()
		return nil, false, fmt.Errorf("raftlog: %w", err)
	}
	if !has {
		var servers []raft.Server
		switch {
		case len(l.cfg.Peers) > 0:
			for _, p := range l.cfg.Peers {
				servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
			}
		case l.cfg.Join == "":
			servers = []raft.Server{{ID: rc.LocalID, Address: self, Suffrage: raft.Voter}}
		}
		if servers != nil {
			if err := raft.BootstrapCluster(rc, logs, g.store, snaps, g.transport, raft.Configuration{Servers: servers}); err != nil {
				closeStores()
				return nil, false, fmt.Errorf("raftlog: bootstrap group %d: %w", gi, err)
			}
		}
	}
	g.raft, err = raft.NewRaft(rc, g.fsm, logs, g.store, snaps, g.transport)
	if err != nil {
		closeStores()
		return nil, false, fmt.Errorf("raftlog: start group %d: %w", gi, err)
	}
	g.obsCh = make(chan raft.Observation, 16)
	g.observer = raft.NewObserver(g.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	g.raft.RegisterObserver(g.observer)
	l.goRun(func() {
		for {
			select {
			case <-g.obsCh:
				g.leaderSig.notify()
			case <-l.closing:
				return
			}
		}
	})
	g.batcher = newBatcher(g.raft, &l.cfg)
	return g, !has, nil
}

// Close stops the node: appends in progress fail with ErrClosed (their
// outcome unknown), raft groups shut down and files are closed. Close is
// idempotent.
func (l *Log) Close() error {
	var errs []error
	l.closeOnce.Do(func() {
		close(l.closing)
		// Batchers first, while raft runs: their in-flight entries resolve
		// (commit or leadership loss), and none is left in raft's apply
		// queue at shutdown, where its future would never resolve.
		for _, g := range l.groups {
			if g.batcher != nil {
				g.batcher.close()
			}
		}
		for _, g := range l.groups {
			if g.raft == nil {
				continue
			}
			g.raft.DeregisterObserver(g.observer)
			errs = append(errs, g.raft.Shutdown().Error())
		}
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
		for _, g := range l.groups {
			if nt, ok := g.transport.(*raft.NetworkTransport); ok {
				nt.CloseStreams() // Close alone leaves pooled connections open
			}
			if c, ok := g.transport.(io.Closer); ok {
				c.Close()
			}
			if g.store != nil {
				errs = append(errs, g.store.Close())
			}
			if g.fsm != nil {
				errs = append(errs, g.fsm.close())
			}
		}
	})
	return errors.Join(errs...)
}

func (l *Log) isClosed() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// NodeID is this node's ID.
func (l *Log) NodeID() string { return l.cfg.NodeID }

// Addr is the address other nodes reach this node at ("" without network).
func (l *Log) Addr() string { return l.advertise }

// Partitions is the number of partitions.
func (l *Log) Partitions() int { return l.cfg.Partitions }

// Groups is the number of raft groups.
func (l *Log) Groups() int { return l.cfg.Groups }

// Partition is the partition key routes to: FNV-1a of the key modulo the
// number of partitions. It never changes for a given key and partition count.
func (l *Log) Partition(key string) int {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int(h.Sum64() % uint64(l.cfg.Partitions))
}

// GroupOf is the raft group hosting partition p.
func (l *Log) GroupOf(p int) int { return p % l.cfg.Groups }

func (l *Log) groupOf(p int) (*group, error) {
	if p < 0 || p >= l.cfg.Partitions {
		return nil, fmt.Errorf("%w: %d (partitions 0..%d)", ErrUnknownPartition, p, l.cfg.Partitions-1)
	}
	return l.groups[p%l.cfg.Groups], nil
}

// Append appends records under key, in order, to the key's partition (or
// the one chosen with ToPartition), and returns once the batch is committed
// by a quorum and applied. Any node accepts appends: they are forwarded to
// the group's leader, retried across leader changes with the same record
// IDs (never appended twice) until ctx ends.
//
// A batch whose record IDs were all committed before is not appended again:
// the original result comes back with Duplicate set. Errors: the
// validation sentinels (ErrEmptyBatch, ErrRecordTooLarge, ...), a
// *KeySeqError, ErrIDConflict, ErrClosed, or ErrNoLeader when ctx ends
// (wrapping ErrUnknownOutcome if the batch may have been committed).
func (l *Log) Append(ctx context.Context, key string, recs []NewRecord, opts ...AppendOption) (AppendResult, error) {
	if l.isClosed() {
		return AppendResult{}, ErrClosed
	}
	return l.run(ctx, l.request(key, recs, 0, opts))
}

// DeleteKey soft-deletes key: its records are hidden from every read (and
// erased from the state file at the next flush, like TruncateKey), its
// sequence is kept, and appends to it fail with ErrKeyDeleted unless made
// with Recreate. The conditions ExpectKeySeq, ExpectKeyExists and
// ExpectKeyAbsent apply as they do to Append. Deleting a deleted key is a
// no-op that succeeds. The result has Count 0 and FirstKeySeq set to the
// key's first readable sequence afterwards.
func (l *Log) DeleteKey(ctx context.Context, key string, opts ...AppendOption) (AppendResult, error) {
	return l.run(ctx, l.request(key, nil, reqDelete, opts))
}

// TruncateKey hides key's records with a sequence below before from every
// read, at once on every replica that applies it, and erases them from the
// state file at the next flush (for retention and erasure; the raft log
// keeps its copy until raft compacts it past the entry). Offsets of
// erased records are skipped by partition reads. A key is never truncated
// past its last record plus one, and never un-truncated: a lower before is
// a no-op. Conditions apply as they do to Append. The result has Count 0
// and FirstKeySeq set to the key's first readable sequence afterwards.
func (l *Log) TruncateKey(ctx context.Context, key string, before uint64, opts ...AppendOption) (AppendResult, error) {
	req := l.request(key, nil, reqTruncate, opts)
	req.Before = before
	return l.run(ctx, req)
}

// request builds an append request from the options.
func (l *Log) request(key string, recs []NewRecord, op uint64, opts []AppendOption) appendRequest {
	var o appendOptions
	if len(opts) > 0 { // options escape: allocate only when there are some
		po := new(appendOptions)
		for _, opt := range opts {
			opt(po)
		}
		o = *po
	}
	req := appendRequest{Key: key, Records: recs, Flags: o.flags | op, Expected: o.expected}
	if o.hasPartition {
		req.Partition = o.partition
	} else {
		req.Partition = l.Partition(key)
	}
	return req
}

// run validates req and runs it on its group's leader.
func (l *Log) run(ctx context.Context, req appendRequest) (AppendResult, error) {
	if l.isClosed() {
		return AppendResult{}, ErrClosed
	}
	if err := l.validate(&req); err != nil {
		return AppendResult{}, err
	}
	g, _ := l.groupOf(req.Partition)
	return l.submit(ctx, g, encodeRequest(make([]byte, 0, requestSize(&req)), &req))
}

// validate checks an append against the limits and gives records without
// an ID a new one (in a copy: the caller's slice is not modified).
func (l *Log) validate(r *appendRequest) error {
	switch {
	case r.Key == "":
		return ErrEmptyKey
	case len(r.Key) > maxKeyBytes:
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrRecordTooLarge, len(r.Key), maxKeyBytes)
	case r.isKeyOp():
		if _, err := l.groupOf(r.Partition); err != nil {
			return err
		}
		return nil
	case len(r.Records) == 0:
		return ErrEmptyBatch
	case len(r.Records) > l.cfg.MaxBatchRecords:
		return fmt.Errorf("%w: %d records, limit %d", ErrBatchTooLarge, len(r.Records), l.cfg.MaxBatchRecords)
	}
	if _, err := l.groupOf(r.Partition); err != nil {
		return err
	}
	total := 0
	copied := false
	var seen map[uuid.UUID]struct{} // for large batches; small ones compare pairwise
	if len(r.Records) > 16 {
		seen = make(map[uuid.UUID]struct{}, len(r.Records))
	}
	for i := range r.Records {
		rec := &r.Records[i]
		size := len(rec.Value)
		for _, h := range rec.Headers {
			size += len(h.Key) + len(h.Value)
		}
		if size > l.cfg.MaxRecordBytes {
			return fmt.Errorf("%w: record %d is %d bytes, limit %d", ErrRecordTooLarge, i, size, l.cfg.MaxRecordBytes)
		}
		total += size
		if rec.ID == uuid.Nil {
			if !copied {
				r.Records = append([]NewRecord(nil), r.Records...)
				rec = &r.Records[i]
				copied = true
			}
			rec.ID = uuid.Must(uuid.NewV7())
		}
		if seen != nil {
			if _, dup := seen[rec.ID]; dup {
				return fmt.Errorf("%w: %s", ErrDuplicateID, rec.ID)
			}
			seen[rec.ID] = struct{}{}
			continue
		}
		for j := range i {
			if r.Records[j].ID == rec.ID {
				return fmt.Errorf("%w: %s", ErrDuplicateID, rec.ID)
			}
		}
	}
	if total > l.cfg.MaxBatchBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBatchTooLarge, total, l.cfg.MaxBatchBytes)
	}
	return nil
}

// submit runs an encoded append on the group's leader, wherever it is,
// until it has an outcome or ctx ends.
func (l *Log) submit(ctx context.Context, g *group, enc []byte) (AppendResult, error) {
	unknown := false
	bo := backoff{}
	for {
		if l.isClosed() {
			return AppendResult{}, l.giveUp(ErrClosed, unknown)
		}
		changed := g.leaderSig.wait()
		var res AppendResult
		var err error
		addr, id := g.raft.LeaderWithID()
		switch {
		case id == raft.ServerID(l.cfg.NodeID):
			res, err = g.batcher.submit(ctx, enc)
		case addr != "" && l.client != nil:
			res, err = l.forwardWhileLeader(ctx, string(addr), enc, changed)
		default:
			err = &retryError{cause: ErrNoLeader}
		}
		var re *retryError
		if !errors.As(err, &re) {
			return res, err
		}
		unknown = unknown || re.unknown
		if ctx.Err() != nil {
			return AppendResult{}, l.giveUp(ctx.Err(), unknown)
		}
		select {
		case <-changed:
			bo.reset()
		case <-bo.next():
		case <-ctx.Done():
			return AppendResult{}, l.giveUp(ctx.Err(), unknown)
		case <-l.closing:
			return AppendResult{}, l.giveUp(ErrClosed, unknown)
		}
	}
}

// forwardWhileLeader forwards an append to addr, abandoning the call if
// this node learns of another leader meanwhile: a leader that was paused
// or cut off would otherwise hold the append until ctx ends. An abandoned
// call's outcome is unknown and submit retries it, with the same IDs, on
// the new leader.
func (l *Log) forwardWhileLeader(ctx context.Context, addr string, enc []byte, changed <-chan struct{}) (AppendResult, error) {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-fctx.Done():
		}
	}()
	return l.forwardAppend(fctx, addr, enc)
}

// giveUp builds the error of an append that ran out of time or was closed.
func (l *Log) giveUp(cause error, unknown bool) error {
	base := ErrNoLeader
	if errors.Is(cause, ErrClosed) {
		base = ErrClosed
	}
	if unknown {
		return fmt.Errorf("%w (%w): %w", base, ErrUnknownOutcome, cause)
	}
	if base == cause {
		return base
	}
	return fmt.Errorf("%w: %w", base, cause)
}

// backoff paces retries that no leader change will wake (a leader that is
// known but unreachable): 5 ms doubling to 500 ms.
type backoff struct{ d time.Duration }

func (b *backoff) next() <-chan time.Time {
	switch {
	case b.d == 0:
		b.d = 5 * time.Millisecond
	case b.d < 500*time.Millisecond:
		b.d *= 2
	}
	return time.After(b.d)
}

func (b *backoff) reset() { b.d = 0 }

// Read returns committed records of partition p from offset from, bounded
// by opt. It reads this node's replica and never waits. Records hidden by
// DeleteKey or TruncateKey are skipped (their offsets are missing from the
// result); an empty result means nothing visible at or after from has been
// applied here yet, so a reader that took NextOffset before the call may
// go on from there.
func (l *Log) Read(ctx context.Context, p int, from uint64, opt ReadOptions) ([]Record, error) {
	g, err := l.readable(p)
	if err != nil {
		return nil, err
	}
	maxRecs, maxBytes := readLimits(opt)
	return g.fsm.read(p, from, maxRecs, maxBytes)
}

// ReadKey returns committed records of key in partition p (see Partition)
// from key sequence from, bounded by opt.
func (l *Log) ReadKey(ctx context.Context, p int, key string, from uint64, opt ReadOptions) ([]Record, error) {
	g, err := l.readable(p)
	if err != nil {
		return nil, err
	}
	if from == 0 {
		from = 1
	}
	maxRecs, maxBytes := readLimits(opt)
	return g.fsm.readKey(p, key, from, maxRecs, maxBytes)
}

// KeySeq returns the current sequence of key in partition p on this
// replica: the number of records appended under it.
func (l *Log) KeySeq(ctx context.Context, p int, key string) (uint64, error) {
	g, err := l.readable(p)
	if err != nil {
		return 0, err
	}
	return g.fsm.keySeq(p, key)
}

// KeyInfo returns the state of key in partition p on this replica.
func (l *Log) KeyInfo(ctx context.Context, p int, key string) (KeyInfo, error) {
	g, err := l.readable(p)
	if err != nil {
		return KeyInfo{}, err
	}
	return g.fsm.keyInfo(p, key)
}

// NextOffset returns the offset the next record of partition p will take,
// as applied on this replica.
func (l *Log) NextOffset(p int) (uint64, error) {
	g, err := l.readable(p)
	if err != nil {
		return 0, err
	}
	i, _ := g.fsm.slot(p)
	return g.fsm.next[i].Load(), nil
}

func (l *Log) readable(p int) (*group, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	return l.groupOf(p)
}

func readLimits(opt ReadOptions) (int, int) {
	maxRecs, maxBytes := opt.MaxRecords, opt.MaxBytes
	if maxRecs <= 0 {
		maxRecs = 1000
	}
	if maxBytes <= 0 {
		maxBytes = 4 << 20
	}
	return maxRecs, maxBytes
}

// Wait blocks until partition p holds a record at offset (its next offset
// is beyond it) on this replica, or ctx ends. It is woken by the apply path.
func (l *Log) Wait(ctx context.Context, p int, offset uint64) error {
	g, err := l.readable(p)
	if err != nil {
		return err
	}
	i, _ := g.fsm.slot(p)
	return l.waitUntil(ctx, &g.fsm.signals[i], func() bool { return g.fsm.next[i].Load() > offset })
}

// WaitApplied blocks until this replica has applied pos, so that reads here
// see every write acknowledged up to it (read-your-writes on any node).
func (l *Log) WaitApplied(ctx context.Context, pos Position) error {
	if l.isClosed() {
		return ErrClosed
	}
	if pos.Group < 0 || pos.Group >= len(l.groups) {
		return fmt.Errorf("%w: group %d", ErrUnknownPartition, pos.Group)
	}
	f := l.groups[pos.Group].fsm
	return l.waitUntil(ctx, &f.appSig, func() bool { return f.applied.Load() >= pos.Index })
}

// waitUntil blocks until cond holds, re-checking it whenever sig fires.
func (l *Log) waitUntil(ctx context.Context, sig *signal, cond func() bool) error {
	for {
		ch := sig.wait() // before the check, so no notify is missed
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.closing:
			return ErrClosed
		}
	}
}

// Applied is the position this replica has applied in group g.
func (l *Log) Applied(g int) Position {
	return Position{Group: g, Index: l.groups[g].fsm.applied.Load()}
}
