package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// RemoteConfig configures Dial.
type RemoteConfig struct {
	// Addrs are cluster addresses of nodes (Config.Advertise); the client
	// learns the other members from the first that answers and fails over
	// among them all.
	Addrs []string
	// ID names the client. With TLS its certificate must name it, as a
	// worker (esraft://<cluster>/worker/<ID>; a voter certificate also
	// works) of the cluster's CA; it need not be a member.
	ID string
	// TLS is the client's mutual TLS (as a node's, see TLSConfig; the
	// files are read once, at Dial: a client is not reloaded, restart it
	// with a new certificate). Without it, nodes serve clients from
	// loopback only.
	TLS *TLSConfig
	// CallTimeout bounds the calls that take no context (NextOffset,
	// GroupState) and one attempt on one node of any call whose context
	// has no earlier deadline (default 10 s). A node that does not answer
	// within it is left for the next. While no node answers, closing a
	// subscription may wait for one such call to end.
	CallTimeout time.Duration
	// Dialer opens connections (tests); nil: TCP.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// Logger receives the client's lines (failovers at INFO); nil: WARN
	// and above to stderr.
	Logger *slog.Logger
}

// Remote is a thin client of a cluster: it holds no replica and serves
// every call through a node of the cluster (any node: writes are forwarded
// to the leader there), with the semantics of the embedded Log's methods
// of the same names. It connects to one node at a time and fails over to
// the next it knows when that node cannot be reached, refuses the call
// for now (it is starting or busy) or cannot give an outcome in time.
//
// Appends are idempotent across failovers: the client gives every record
// its ID before the first attempt and retries the same encoded request,
// which the log deduplicates by ID; an append whose outcome no node could
// report before ctx ended fails with ErrNoLeader wrapping
// ErrUnknownOutcome, as on the embedded log.
//
// Reads never go back in time across a failover: the client remembers the
// highest raft index it has seen of each shard (its own writes, a barrier,
// WaitApplied) and a node serves a read only once it has applied that
// much. WaitApplied itself therefore returns at once: it only raises what
// later reads wait for. All methods are safe for concurrent use.
type Remote struct {
	cfg    RemoteConfig
	client *mux.Client
	logger *slog.Logger

	partitions, shards int
	maxBatchRecords    int
	clusterID          string

	mu    sync.Mutex
	addrs []string // configured, then learned
	cur   int      // index of the node in use

	seen     []atomic.Uint64 // per shard: the highest index known applied somewhere
	heads    []atomic.Uint64 // per partition: the highest next offset a node answered (NextOffset)
	appender *remoteAppender // appends, gathered into calls (remote_append.go)
	closing  chan struct{}
	once     sync.Once
}

// remoteRetry paces attempts after a node failed or refused, and across
// rounds of every node.
var remoteRetry = backoff.Policy{Initial: 10 * time.Millisecond, Max: time.Second}

// remoteGrace is how much longer than the node's own bound the client
// waits for an answer before it gives up on the node.
const remoteGrace = 5 * time.Second

// Dial returns a client of the cluster at cfg.Addrs once one of them
// answered (learning the log's shape and the other members), or fails
// when ctx ends first.
func Dial(ctx context.Context, cfg RemoteConfig) (*Remote, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("%w: Remote needs at least one address", ErrConfig)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	r := &Remote{cfg: cfg, addrs: slices.Clone(cfg.Addrs), closing: make(chan struct{}),
		logger: cfg.Logger.With("logger", "raftlog.remote", "client", cfg.ID)}
	dial := mux.Dialer(cfg.Dialer)
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if cfg.TLS != nil {
		if err := cfg.TLS.validate(cfg.ID); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		t, err := newClusterTLS(&Config{NodeID: cfg.ID, NonVoter: true, TLS: cfg.TLS}, r.logger)
		if err != nil {
			return nil, err
		}
		dial = mux.TLSDialer(dial, t.client)
	}
	r.client = mux.NewClient(mux.New(nil, dial), serviceRPC)
	d, err := r.call(ctx, route.MethodClientInfo, nil, false)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("raftlog: dial %v: %w", cfg.Addrs, err)
	}
	r.partitions, r.shards, r.maxBatchRecords = int(d.Uvarint()), int(d.Uvarint()), int(d.Uvarint())
	node, cluster := d.Str(), d.Str()
	n := d.Count(1)
	var learned []string
	for range n {
		learned = append(learned, d.Str())
	}
	if d.Finish() != nil || r.partitions < 1 || r.partitions > core.MaxPartitions || r.shards < 1 || r.shards > core.MaxShards {
		r.Close()
		return nil, fmt.Errorf("%w: malformed answer from %v", ErrCorrupt, cfg.Addrs)
	}
	r.clusterID = cluster
	r.seen = make([]atomic.Uint64, r.shards)
	r.heads = make([]atomic.Uint64, r.partitions)
	r.mu.Lock()
	for _, a := range learned {
		if !slices.Contains(r.addrs, a) {
			r.addrs = append(r.addrs, a)
		}
	}
	addrs := slices.Clone(r.addrs)
	r.mu.Unlock()
	r.appender = newRemoteAppender(r)
	r.logger.Info("raftlog: connected", "node", node, "cluster", cluster, "nodes", addrs)
	return r, nil
}

// Close closes the client's connections; calls in flight and later calls
// fail with ErrClosed. It is idempotent.
func (r *Remote) Close() error {
	r.once.Do(func() {
		close(r.closing)
		r.client.Close()
		if r.appender != nil {
			r.appender.wait()
		}
	})
	return nil
}

// Logger is the client's logger (RemoteConfig.Logger).
func (r *Remote) Logger() *slog.Logger { return r.cfg.Logger }

// Partitions is the log's number of partitions.
func (r *Remote) Partitions() int { return r.partitions }

// Shards is the log's number of shards.
func (r *Remote) Shards() int { return r.shards }

// MaxBatchRecords is the log's limit on the records of one append.
func (r *Remote) MaxBatchRecords() int { return r.maxBatchRecords }

// ClusterID is the cluster's identity as the node first reached knew it
// ("" if it did not know it yet).
func (r *Remote) ClusterID() string { return r.clusterID }

// Partition is the partition key routes to, as Log.Partition.
func (r *Remote) Partition(key string) Partition { return partitionOf(key, r.partitions) }

// Addrs are the nodes the client knows, the one in use first.
func (r *Remote) Addrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(slices.Clone(r.addrs[r.cur:]), r.addrs[:r.cur]...)
}

// node is the address in use.
func (r *Remote) node() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addrs[r.cur]
}

// failover moves on from addr to the next node, unless another call did
// already.
func (r *Remote) failover(addr string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.addrs[r.cur] != addr {
		return
	}
	r.cur = (r.cur + 1) % len(r.addrs)
	r.logger.Info("raftlog: failing over", "from", addr, "to", r.addrs[r.cur], "err", err)
}

// call runs a client call on the node in use, failing over and retrying
// what may be retried (the node is unreachable, refused it for now, or
// could not give an outcome in time) until an outcome or the end of ctx.
// body is the payload after the wait every payload starts with; write
// tells whether a failed attempt may have applied something (the error
// then wraps ErrUnknownOutcome).
func (r *Remote) call(ctx context.Context, code byte, body []byte, write bool) (*wire.Decoder, error) {
	return r.attempt(ctx, code, body, write, false)
}

// attempt is call for a write that an earlier attempt may have applied
// already (unknown).
func (r *Remote) attempt(ctx context.Context, code byte, body []byte, write, unknown bool) (*wire.Decoder, error) {
	bo := backoff.Backoff{Policy: remoteRetry}
	for {
		select {
		case <-r.closing:
			return nil, route.GiveUp(ErrClosed, unknown)
		default:
		}
		wait := r.cfg.CallTimeout
		if code == route.MethodClientWait {
			wait = maxClientWait
		}
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		actx, cancel := context.WithTimeout(ctx, wait+remoteGrace)
		payload := binary.AppendUvarint(make([]byte, 0, 4+len(body)), uint64(max(wait/time.Millisecond, 1)))
		addr := r.node()
		resp, err := r.client.Call(actx, addr, code, append(payload, body...))
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		var d *wire.Decoder
		if err == nil {
			if d, err = route.ClientResult(resp); err == nil {
				return d, nil
			}
		}
		if errors.Is(err, mux.ErrClosed) {
			return nil, route.GiveUp(ErrClosed, unknown)
		}
		retry, unk := route.Retryable(err)
		if !retry && timedOut {
			retry, unk = true, true // the node did not answer in time
		}
		if !retry {
			if ctx.Err() != nil {
				return nil, route.GiveUp(ctx.Err(), unknown)
			}
			return nil, err
		}
		unknown = unknown || (write && unk)
		r.failover(addr, err)
		select {
		case <-bo.After():
		case <-ctx.Done():
			return nil, route.GiveUp(ctx.Err(), unknown)
		case <-r.closing:
			return nil, route.GiveUp(ErrClosed, unknown)
		}
	}
}

// callNoCtx is call for the methods that take no context.
func (r *Remote) callNoCtx(code byte, body []byte) (*wire.Decoder, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
	defer cancel()
	return r.call(ctx, code, body, false)
}

// saw raises what later reads of shard s wait for to index.
func (r *Remote) saw(s Shard, index uint64) {
	if s < 0 || int(s) >= len(r.seen) {
		return
	}
	raise(&r.seen[s], index)
}

// raise sets v to index if that is higher.
func raise(v *atomic.Uint64, index uint64) {
	for {
		old := v.Load()
		if index <= old || v.CompareAndSwap(old, index) {
			return
		}
	}
}

// seenOf is what a read of partition p must wait for; for an unknown
// partition 0, and the node refuses the partition.
func (r *Remote) seenOf(p Partition) uint64 {
	if p < 0 || int(p) >= r.partitions {
		return 0
	}
	return r.seen[int(p)%r.shards].Load()
}

// Append appends records under key, as Log.Append, through the node in
// use. Records without an ID get one here, before the first attempt.
func (r *Remote) Append(ctx context.Context, key string, recs []NewRecord, opts ...AppendOption) (AppendResult, error) {
	return r.run(ctx, buildRequest(key, recs, 0, opts, r.Partition))
}

// DeleteKey soft-deletes key, as Log.DeleteKey.
func (r *Remote) DeleteKey(ctx context.Context, key string, opts ...AppendOption) (AppendResult, error) {
	return r.run(ctx, buildRequest(key, nil, wire.ReqDelete, opts, r.Partition))
}

// TruncateKey hides key's records below before, as Log.TruncateKey.
func (r *Remote) TruncateKey(ctx context.Context, key string, before uint64, opts ...AppendOption) (AppendResult, error) {
	req := buildRequest(key, nil, wire.ReqTruncate, opts, r.Partition)
	req.Before = before
	return r.run(ctx, req)
}

func (r *Remote) run(ctx context.Context, req wire.Request) (AppendResult, error) {
	// The IDs are fixed here, so that every attempt, on any node, is the
	// same request; the node checks everything else.
	missing := 0
	for i := range req.Records {
		if req.Records[i].ID == uuid.Nil {
			missing++
		}
	}
	if missing > 0 {
		req.Records = fillIDs(req.Records, missing)
	}
	d, err := r.appender.append(ctx, wire.EncodeRequest(make([]byte, 0, wire.RequestSize(&req)), &req))
	if err != nil {
		return AppendResult{}, err
	}
	res := route.DecodeAppendResult(d)
	if d.Finish() != nil {
		return AppendResult{}, fmt.Errorf("%w (%w): malformed append result", ErrCorrupt, ErrUnknownOutcome)
	}
	r.saw(res.Position.Shard, res.Position.Index)
	return res, nil
}

// Read returns records of partition p from offset from, as Log.Read, from
// the node in use.
func (r *Remote) Read(ctx context.Context, p Partition, from uint64, opt ReadOptions) ([]Record, error) {
	return r.read(ctx, p, from, opt, false, "")
}

// ReadKey returns records of key in partition p from sequence from, as
// Log.ReadKey.
func (r *Remote) ReadKey(ctx context.Context, p Partition, key string, from uint64, opt ReadOptions) ([]Record, error) {
	return r.read(ctx, p, from, opt, true, key)
}

func (r *Remote) read(ctx context.Context, p Partition, from uint64, opt ReadOptions, byKey bool, key string) ([]Record, error) {
	maxRecs, maxBytes := readLimits(opt)
	b := binary.AppendUvarint(nil, r.seenOf(p))
	b = binary.AppendUvarint(b, uint64(max(p, 0)))
	b = binary.AppendUvarint(b, from)
	b = binary.AppendUvarint(b, uint64(maxRecs))
	b = binary.AppendUvarint(b, uint64(maxBytes))
	b = appendFlag(b, byKey)
	b = wire.AppendString(b, key)
	if p < 0 {
		return nil, fmt.Errorf("%w: %d", ErrUnknownPartition, p)
	}
	for waited := false; ; waited = true {
		d, err := r.call(ctx, route.MethodClientRead, b, false)
		if err != nil {
			return nil, err
		}
		recs := route.DecodeRecords(d, p)
		if d.Finish() != nil {
			return nil, fmt.Errorf("%w: malformed records of partition %d", ErrCorrupt, p)
		}
		// Nothing from an offset below a head a node showed this client:
		// either every record up to it is hidden (deleted keys), or the
		// node in use lags the one that answered NextOffset (a failover in
		// between). A caller that then moves on to that head, as a
		// subscription does, would skip records: wait until this node
		// holds them, and read once more.
		var head uint64
		if int(p) < len(r.heads) {
			head = r.heads[p].Load()
		}
		if len(recs) > 0 || byKey || from >= head || waited {
			return recs, nil
		}
		if err := r.Wait(ctx, p, head-1); err != nil {
			return nil, err
		}
	}
}

// ListKeys returns a page of keys, as Log.ListKeys, from the node in use
// once it has applied what this client has seen.
func (r *Remote) ListKeys(ctx context.Context, prefix, after string, limit int) ([]ListedKey, error) {
	b := binary.AppendUvarint(nil, uint64(r.shards))
	for s := range r.seen {
		b = binary.AppendUvarint(b, r.seen[s].Load())
	}
	b = wire.AppendString(wire.AppendString(b, prefix), after)
	b = binary.AppendUvarint(b, uint64(min(max(limit, 1), MaxListKeys)))
	d, err := r.call(ctx, route.MethodClientListKeys, b, false)
	if err != nil {
		return nil, err
	}
	keys := route.DecodeListedKeys(d, MaxListKeys, r.partitions)
	if d.Finish() != nil {
		return nil, fmt.Errorf("%w: malformed key listing", ErrCorrupt)
	}
	return keys, nil
}

// KeyInfo returns the state of key in partition p, as Log.KeyInfo.
func (r *Remote) KeyInfo(ctx context.Context, p Partition, key string) (KeyInfo, error) {
	if p < 0 {
		return KeyInfo{}, fmt.Errorf("%w: %d", ErrUnknownPartition, p)
	}
	b := binary.AppendUvarint(nil, r.seenOf(p))
	b = binary.AppendUvarint(b, uint64(p))
	d, err := r.call(ctx, route.MethodClientKeyInfo, wire.AppendString(b, key), false)
	if err != nil {
		return KeyInfo{}, err
	}
	k := KeyInfo{Seq: d.Uvarint(), First: d.Uvarint(), Deleted: d.Byte() == 1}
	if d.Finish() != nil {
		return KeyInfo{}, fmt.Errorf("%w: malformed key state", ErrCorrupt)
	}
	return k, nil
}

// NextOffset returns the offset the next record of partition p will take,
// as the node in use has applied it (bounded by CallTimeout).
func (r *Remote) NextOffset(p Partition) (uint64, error) {
	if p < 0 {
		return 0, fmt.Errorf("%w: %d", ErrUnknownPartition, p)
	}
	b := binary.AppendUvarint(nil, r.seenOf(p))
	d, err := r.callNoCtx(route.MethodClientHead, binary.AppendUvarint(b, uint64(p)))
	if err != nil {
		return 0, err
	}
	next := d.Uvarint()
	if d.Finish() != nil {
		return 0, fmt.Errorf("%w: malformed offset", ErrCorrupt)
	}
	if int(p) < len(r.heads) {
		raise(&r.heads[p], next) // reads of p wait for it (read)
	}
	return next, nil
}

// Wait blocks until partition p holds a record at offset on the node in
// use, or ctx ends, as Log.Wait: a long poll, asked again every 10 s and
// on the next node after a failover.
func (r *Remote) Wait(ctx context.Context, p Partition, offset uint64) error {
	if p < 0 || int(p) >= r.partitions {
		return fmt.Errorf("%w: %d", ErrUnknownPartition, p)
	}
	b := binary.AppendUvarint([]byte{route.WaitPartition}, uint64(p))
	return r.longPoll(ctx, binary.AppendUvarint(b, offset))
}

// WaitGroupChange blocks until a generation of group above gen is
// applied, or ctx ends, as Log.WaitGroupChange.
func (r *Remote) WaitGroupChange(ctx context.Context, group string, gen uint64) error {
	b := wire.AppendString([]byte{route.WaitGroup}, group)
	return r.longPoll(ctx, binary.AppendUvarint(b, gen))
}

func (r *Remote) longPoll(ctx context.Context, body []byte) error {
	for {
		d, err := r.call(ctx, route.MethodClientWait, body, false)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		done := d.Byte() == 1
		if d.Finish() != nil {
			return fmt.Errorf("%w: malformed wait answer", ErrCorrupt)
		}
		if done {
			return nil
		}
	}
}

// WaitApplied makes later reads through this client include every write
// up to pos: it returns at once, and each read waits, on whichever node
// serves it, until that node has applied pos.
func (r *Remote) WaitApplied(ctx context.Context, pos Position) error {
	if r.isClosed() {
		return ErrClosed
	}
	if pos.Shard < 0 || int(pos.Shard) >= r.shards {
		return fmt.Errorf("%w: shard %d", ErrUnknownPartition, pos.Shard)
	}
	r.saw(pos.Shard, pos.Index)
	return nil
}

// ReadBarrier makes later reads through this client see every write
// acknowledged before the call, as Log.ReadBarrier.
func (r *Remote) ReadBarrier(ctx context.Context, s Shard) error {
	if s < 0 || int(s) >= r.shards {
		return fmt.Errorf("%w: shard %d", ErrUnknownPartition, s)
	}
	d, err := r.call(ctx, route.MethodClientBarrier, binary.AppendUvarint(nil, uint64(s)), false)
	if err != nil {
		return err
	}
	index := d.Uvarint()
	if d.Finish() != nil {
		return fmt.Errorf("%w: malformed barrier answer", ErrCorrupt)
	}
	r.saw(s, index)
	return nil
}

func (r *Remote) isClosed() bool {
	select {
	case <-r.closing:
		return true
	default:
		return false
	}
}

// JoinGroup adds member to group, as Log.JoinGroup.
func (r *Remote) JoinGroup(ctx context.Context, group, member string, sessionTimeout time.Duration) (GroupState, error) {
	return r.groupCall(ctx, &wire.GroupOp{Op: wire.GopJoin, Group: group, Member: member, Session: int64(sessionTimeout)})
}

// JoinGroupAt is JoinGroup for a group that may not exist yet, as
// Log.JoinGroupAt: start is resolved through the node in use.
func (r *Remote) JoinGroupAt(ctx context.Context, group, member string, sessionTimeout time.Duration, start StartPosition) (GroupState, error) {
	if start.Kind == StartEarliest {
		return r.JoinGroup(ctx, group, member, sessionTimeout)
	}
	op, err := joinAtOp(ctx, r, group, member, sessionTimeout, start)
	if err != nil {
		return GroupState{}, err
	}
	return r.groupCall(ctx, op)
}

// ResetGroup moves every partition of a stopped group to start, as
// Log.ResetGroup.
func (r *Remote) ResetGroup(ctx context.Context, group string, start StartPosition) (GroupState, error) {
	op, err := resetOp(ctx, r, group, start)
	if err != nil {
		return GroupState{}, err
	}
	return r.groupCall(ctx, op)
}

// ForceResetGroup resets a group whatever its members, fencing them, as
// Log.ForceResetGroup.
func (r *Remote) ForceResetGroup(ctx context.Context, group string, start StartPosition) (GroupState, error) {
	op, err := resetOp(ctx, r, group, start)
	if err != nil {
		return GroupState{}, err
	}
	op.Op = wire.GopForceReset
	return r.groupCall(ctx, op)
}

// DeleteGroup removes a stopped group and its state, as Log.DeleteGroup.
func (r *Remote) DeleteGroup(ctx context.Context, group string) error {
	_, err := r.groupCall(ctx, &wire.GroupOp{Op: wire.GopDelete, Group: group})
	return err
}

// Heartbeat keeps member in group, as Log.Heartbeat.
func (r *Remote) Heartbeat(ctx context.Context, group, member string, release []Partition) (GroupState, error) {
	return r.groupCall(ctx, &wire.GroupOp{Op: wire.GopHeartbeat, Group: group, Member: member, Release: release})
}

// LeaveGroup removes member from group, as Log.LeaveGroup.
func (r *Remote) LeaveGroup(ctx context.Context, group, member string) error {
	_, err := r.groupCall(ctx, &wire.GroupOp{Op: wire.GopLeave, Group: group, Member: member})
	if errors.Is(err, ErrUnknownMember) {
		return nil
	}
	return err
}

// CommitOffsets records member's progress, as Log.CommitOffsets.
func (r *Remote) CommitOffsets(ctx context.Context, group, member string, commits []OffsetCommit) (GroupState, error) {
	return r.groupCall(ctx, &wire.GroupOp{Op: wire.GopCommit, Group: group, Member: member, Commits: commits})
}

// RetryParked asks the owner of partition to handle a parked record
// again, as Log.RetryParked.
func (r *Remote) RetryParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	_, err := r.groupCall(ctx, &wire.GroupOp{Op: wire.GopRetry, Group: group, Partition: partition, Offset: offset})
	return err
}

// SkipParked asks the owner of partition to drop a parked record
// unhandled, as Log.SkipParked.
func (r *Remote) SkipParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	_, err := r.groupCall(ctx, &wire.GroupOp{Op: wire.GopSkip, Group: group, Partition: partition, Offset: offset})
	return err
}

// groupCall runs a group operation through the node in use. Group
// operations are idempotent, so every failure is retried.
func (r *Remote) groupCall(ctx context.Context, op *wire.GroupOp) (GroupState, error) {
	if err := op.Check(); err != nil {
		return GroupState{}, err
	}
	d, err := r.call(ctx, route.MethodClientGroup, wire.EncodeGroupOp(nil, op), true)
	if err != nil {
		return GroupState{}, err
	}
	st := route.DecodeGroupState(d)
	if d.Finish() != nil {
		return GroupState{}, fmt.Errorf("%w: malformed group state", ErrCorrupt)
	}
	return st, nil
}

// GroupState returns group as the node in use has applied it, as
// Log.GroupState (bounded by CallTimeout).
func (r *Remote) GroupState(group string) (GroupState, bool, error) {
	b := binary.AppendUvarint(nil, r.seen[0].Load())
	d, err := r.callNoCtx(route.MethodClientGroupState, wire.AppendString(b, group))
	if err != nil {
		return GroupState{}, false, err
	}
	if d.Byte() != 1 {
		return GroupState{}, false, d.Finish()
	}
	st := route.DecodeGroupState(d)
	if d.Finish() != nil {
		return GroupState{}, false, fmt.Errorf("%w: malformed group state", ErrCorrupt)
	}
	return st, true, nil
}
