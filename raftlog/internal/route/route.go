// Package route runs every write of the log on the leader of its shard,
// wherever that is: group commit on the leader (Batcher), one
// leader-or-forward path shared by appends, consumer group operations,
// membership changes and the read barrier, and the node-to-node calls that
// carry them (rpc.go: one table of methods, one reply codec).
//
// A call that may have been applied when it failed (a leadership loss, a
// forward cut mid-way, a context that ended after hand-off) is retried with
// the same payload until it has an outcome or its context ends: appends are
// deduplicated by record ID in the state machine and every other call is
// idempotent, so a retry never applies twice.
//
// It imports core, wire, cgroup (for the encoding of a group's state),
// internal/mux and internal/backoff.
package route

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Shard is one raft group of this node, as routing sees it.
type Shard struct {
	ID      core.Shard
	Raft    *raft.Raft
	Batcher *Batcher
	// Applied returns the raft index this node has applied in the shard.
	Applied func() uint64

	leader core.Signal // woken on every leader change seen by this node
	reads  readIndexer
}

// readIndexer coalesces this node's read-index requests while it leads:
// each round commits one raft barrier entry, in the leader's own term,
// for every request that arrived before the round began.
type readIndexer struct {
	mu      sync.Mutex
	waiting []chan readIndexResult
	running bool
}

type readIndexResult struct {
	index uint64
	err   error
}

// barrierTimeout bounds one round's barrier; a leader that cannot commit
// it in that time is asked again by the callers' retry loop.
const barrierTimeout = 5 * time.Second

// LeaderChanged wakes the calls waiting for a new leader of s; the owner
// of raft's leader observations calls it.
func (s *Shard) LeaderChanged() { s.leader.Notify() }

// Config is what a Router needs.
type Config struct {
	Self       string      // this node's ID
	Partitions int         // the log's partitions
	Shards     []*Shard    // this node's shards, by ID
	Client     *mux.Client // carries calls to other nodes; nil for a node without a network
	// Validate checks an append request as the node that took it did
	// (limits, key, IDs): a forwarded one is checked again before it is
	// proposed, so that no entry a peer sends can fail to apply.
	Validate func(*wire.Request) error
	// Closing ends every call in progress with ErrClosed.
	Closing <-chan struct{}
	Logger  *slog.Logger
	// Probe reports this node's state to a peer that asks (MethodProbe).
	Probe func() NodeState
	// Authorize, if set, decides whether the caller of a node-to-node call
	// (mux.PeerFromContext(ctx)) may make it; an error refuses the call
	// before anything runs and should wrap core.ErrUnauthorized.
	Authorize func(ctx context.Context, c Call) error
	// ServeClient, if set, runs a client call (IsClientMethod) once it is
	// authorized and the node runs, and returns its reply (ClientReply).
	ServeClient func(ctx context.Context, code byte, payload []byte) []byte
}

// Call is what authorization sees of a node-to-node call.
type Call struct {
	Method byte
	// Op and NodeID name the change of a MethodJoin (OpAddVoter or
	// OpAddNonvoter of the joining node), a MethodRejoin (OpRejoin) or a
	// MethodMembership.
	Op     byte
	NodeID string
}

// Router routes calls to shard leaders.
type Router struct {
	self       raft.ServerID
	partitions int
	client     *mux.Client
	shards     []*Shard
	validate   func(*wire.Request) error
	closing    <-chan struct{}
	logger     *slog.Logger
	probe      func() NodeState
	// features, if set, replaces Features in MethodFeatures' answer
	// (SetFeatures: tests play a node of an older version).
	features atomic.Pointer[[]string]
	// running is set once every shard's raft runs: until then the node
	// answers probes only (it may be deciding whether to form a cluster or
	// rejoin one, and has no raft to run calls on).
	running     atomic.Bool
	authorize   func(context.Context, Call) error
	serveClient func(context.Context, byte, []byte) []byte
}

// New returns a router. It serves probes at once, and every other call
// once Running was called.
func New(c Config) *Router {
	return &Router{self: raft.ServerID(c.Self), partitions: c.Partitions, client: c.Client, shards: c.Shards,
		validate: c.Validate, closing: c.Closing, logger: c.Logger, probe: c.Probe, authorize: c.Authorize,
		serveClient: c.ServeClient}
}

// Running tells the router that every shard's Raft and Batcher are set.
func (r *Router) Running() { r.running.Store(true) }

// IsRunning reports whether Running was called: every shard's Raft and
// Batcher are set and may be read.
func (r *Router) IsRunning() bool { return r.running.Load() }

// retryPolicy paces retries that no leader change will wake (a leader that
// is known but unreachable).
var retryPolicy = backoff.Policy{Initial: 5 * time.Millisecond, Max: 500 * time.Millisecond}

// Append runs an encoded append request on its shard's leader.
func (r *Router) Append(ctx context.Context, s *Shard, enc []byte) (core.AppendResult, error) {
	return onLeader(ctx, r, s, appendMethod, enc)
}

// Group runs a consumer group operation on the coordinator, shard 0.
func (r *Router) Group(ctx context.Context, op *wire.GroupOp) (core.GroupState, error) {
	return onLeader(ctx, r, r.shards[0], groupMethod, wire.EncodeGroupOp(nil, op))
}

// ReadIndex returns the index shard s's leader had applied when the call
// reached it, after the leader confirmed it still leads.
func (r *Router) ReadIndex(ctx context.Context, s *Shard) (uint64, error) {
	return onLeader(ctx, r, s, readIndexMethod, binary.AppendUvarint(nil, uint64(s.ID)))
}

// Membership operations.
const (
	OpAddVoter    byte = 1
	OpAddNonvoter byte = 2
	OpRemove      byte = 3
	OpRejoin      byte = 4 // demote if a voter, then add as a non-voter (rejoin.go)
)

// ChangeMembership applies a membership change to every shard.
func (r *Router) ChangeMembership(ctx context.Context, op byte, id, addr string) error {
	for _, s := range r.shards {
		if err := r.changeShardMembership(ctx, s, op, id, addr); err != nil {
			return err
		}
	}
	return nil
}

func (r *Router) changeShardMembership(ctx context.Context, s *Shard, op byte, id, addr string) error {
	payload := []byte{op}
	payload = binary.AppendUvarint(payload, uint64(s.ID))
	payload = wire.AppendString(payload, id)
	payload = wire.AppendString(payload, addr)
	if _, err := onLeader(ctx, r, s, membershipMethod, payload); err != nil {
		return fmt.Errorf("raftlog: shard %d: %w", s.ID, err)
	}
	return nil
}

// onLeader runs call m with payload on shard s's leader: here if this node
// leads s, else forwarded to the leader it knows. It retries what may be
// retried (retryError) after a leader change or a backoff, until an outcome
// or the end of ctx.
func onLeader[T any](ctx context.Context, r *Router, s *Shard, m method[T], payload []byte) (T, error) {
	var zero T
	unknown := false
	bo := backoff.Backoff{Policy: retryPolicy}
	for {
		if r.closed() {
			return zero, GiveUp(core.ErrClosed, unknown)
		}
		changed := s.leader.Wait()
		var res T
		var err error
		addr, id := s.Raft.LeaderWithID()
		switch {
		case id == r.self:
			res, err = m.local(ctx, s, payload)
		case addr != "" && r.client != nil:
			res, err = forward(ctx, r, string(addr), m, payload, changed)
		default:
			err = &retryError{cause: core.ErrNoLeader}
		}
		var re *retryError
		if !errors.As(err, &re) {
			return res, err
		}
		r.logger.Debug("raftlog: retrying on the leader", "shard", s.ID, "method", m.code, "leader", string(id), "unknown", re.unknown, "err", re.cause)
		unknown = unknown || re.unknown
		if ctx.Err() != nil {
			return zero, GiveUp(ctx.Err(), unknown)
		}
		select {
		case <-changed:
			bo.Reset()
		case <-bo.After():
		case <-ctx.Done():
			return zero, GiveUp(ctx.Err(), unknown)
		case <-r.closing:
			return zero, GiveUp(core.ErrClosed, unknown)
		}
	}
}

// forward sends a call to addr, believed to lead its shard, abandoning it
// if this node learns of another leader meanwhile: a leader that was
// paused or cut off would otherwise hold the call until ctx ends. An
// abandoned call's outcome is unknown and onLeader retries it on the new
// leader.
func forward[T any](ctx context.Context, r *Router, addr string, m method[T], payload []byte, changed <-chan struct{}) (T, error) {
	var zero T
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-fctx.Done():
		}
	}()
	resp, err := r.client.Call(fctx, addr, m.code, payload)
	if err != nil {
		// The call may have reached the leader before the failure.
		return zero, &retryError{unknown: !errors.Is(err, mux.ErrClosed), cause: err}
	}
	d, err := decodeReply(resp)
	if err != nil {
		return zero, err
	}
	v := m.decode(d)
	if d.Err != nil {
		return zero, undecodable(d.Err)
	}
	return v, nil
}

// GiveUp builds the error of a call that ran out of time or was closed:
// ErrNoLeader or ErrClosed, wrapping ErrUnknownOutcome if an attempt may
// have been applied.
func GiveUp(cause error, unknown bool) error {
	base := core.ErrNoLeader
	if errors.Is(cause, core.ErrClosed) {
		base = core.ErrClosed
	}
	if unknown {
		return fmt.Errorf("%w (%w): %w", base, core.ErrUnknownOutcome, cause)
	}
	if base == cause {
		return base
	}
	return fmt.Errorf("%w: %w", base, cause)
}

func (r *Router) closed() bool {
	select {
	case <-r.closing:
		return true
	default:
		return false
	}
}

// Handle serves a node-to-node call (the mux RPC handler). Every call is
// authorized first (Config.Authorize).
func (r *Router) Handle(ctx context.Context, code byte, payload []byte) ([]byte, error) {
	if r.authorize != nil {
		if err := r.authorize(ctx, callOf(code, payload)); err != nil {
			r.logger.Warn("raftlog: node-to-node call refused", "method", code, "err", err)
			if code == MethodJoin || code == MethodRejoin || code == MethodProbe || code == MethodFeatures {
				return nil, err
			}
			return encodeReply(err, nil), nil
		}
	}
	if code == MethodProbe {
		return encodeNodeState(r.probe()), nil
	}
	if code == MethodFeatures {
		fs := Features
		if p := r.features.Load(); p != nil {
			fs = *p
		}
		return encodeFeatures(fs), nil
	}
	if !r.running.Load() {
		if code == MethodJoin || code == MethodRejoin {
			return nil, errors.New("raftlog: node not running yet")
		}
		return []byte{replyNotLeader}, nil
	}
	if IsClientMethod(code) && r.serveClient != nil {
		return r.serveClient(ctx, code, payload), nil
	}
	switch code {
	case MethodRejoin:
		return nil, r.serveRejoin(ctx, payload)
	case MethodAppend:
		return appendMethod.serve(ctx, r, payload), nil
	case MethodGroup:
		return groupMethod.serve(ctx, r, payload), nil
	case MethodMembership:
		return membershipMethod.serve(ctx, r, payload), nil
	case MethodReadIndex:
		return readIndexMethod.serve(ctx, r, payload), nil
	case MethodRetention:
		return retentionMethod.serve(ctx, r, payload), nil
	case MethodJoin:
		op, id, addr, err := decodeJoin(payload)
		if err != nil {
			return nil, err
		}
		return nil, r.ChangeMembership(ctx, op, id, addr)
	}
	return nil, fmt.Errorf("raftlog: unknown method %d", code)
}

// callOf reads what authorization needs of a call; a malformed payload
// yields a Call without a node, which the method itself then rejects.
func callOf(code byte, payload []byte) Call {
	c := Call{Method: code}
	var err error
	switch code {
	case MethodJoin:
		c.Op, c.NodeID, _, err = decodeJoin(payload)
	case MethodRejoin:
		c.Op = OpRejoin
		c.NodeID, _, err = decodeRejoin(payload)
	case MethodMembership:
		c.Op, _, c.NodeID, _, err = decodeMembership(payload)
	}
	if err != nil {
		c.Op, c.NodeID = 0, ""
	}
	return c
}

// The decoders of the call payloads that carry a node: each call's
// handler and its authorization read the payload through the same one.

// decodeJoin reads a MethodJoin payload: node ID, address, voter flag.
func decodeJoin(payload []byte) (op byte, id, addr string, err error) {
	d := wire.Decoder{B: payload}
	id, addr = d.Str(), d.Str()
	op = OpAddNonvoter
	if d.Byte() == 1 {
		op = OpAddVoter
	}
	if d.Err != nil {
		return 0, "", "", fmt.Errorf("raftlog: malformed join request: %w", d.Err)
	}
	return op, id, addr, nil
}

// decodeRejoin reads a MethodRejoin payload: node ID and address, both
// required, and nothing else.
func decodeRejoin(payload []byte) (id, addr string, err error) {
	d := wire.Decoder{B: payload}
	id, addr = d.Str(), d.Str()
	if err := d.Finish(); err != nil || id == "" || addr == "" {
		return "", "", errors.New("raftlog: malformed rejoin request")
	}
	return id, addr, nil
}

// decodeMembership reads a MethodMembership payload: the operation, the
// shard, node ID and address.
func decodeMembership(payload []byte) (op byte, shard uint64, id, addr string, err error) {
	d := wire.Decoder{B: payload}
	op, shard, id, addr = d.Byte(), d.Uvarint(), d.Str(), d.Str()
	if d.Err != nil {
		return 0, 0, "", "", errors.New("raftlog: malformed membership change")
	}
	return op, shard, id, addr, nil
}

// Join asks the node at addr to add node id, reachable at advertise, to
// every shard, retrying until ctx ends.
func (r *Router) Join(ctx context.Context, addr, id, advertise string, voter bool) error {
	payload := wire.AppendString(nil, id)
	payload = wire.AppendString(payload, advertise)
	payload = appendBool(payload, voter)
	bo := backoff.Backoff{Policy: retryPolicy}
	for {
		_, err := r.client.Call(ctx, addr, MethodJoin, payload)
		if err == nil {
			return nil
		}
		r.logger.Warn("raftlog: join failed; retrying", "via", addr, "err", err)
		select {
		case <-bo.After():
		case <-ctx.Done():
			return fmt.Errorf("raftlog: join %s: %w (last error: %v)", addr, ctx.Err(), err)
		}
	}
}

// forwardedAppend checks an append request a peer forwarded, as the node
// that took it checked it, and returns the shard of its partition. Only
// what passes is proposed: an entry that reaches raft must apply.
func (r *Router) forwardedAppend(enc []byte) (*Shard, error) {
	req, err := wire.DecodeRequest(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: undecodable forwarded append: %w", core.ErrCorrupt, err)
	}
	if req.Partition < 0 || int(req.Partition) >= r.partitions {
		return nil, fmt.Errorf("%w: %d", core.ErrUnknownPartition, req.Partition)
	}
	for i := range req.Records {
		if req.Records[i].ID == uuid.Nil {
			return nil, fmt.Errorf("%w: forwarded append: record %d has no ID", core.ErrCorrupt, i)
		}
	}
	if err := r.validate(&req); err != nil {
		return nil, err
	}
	return r.shards[int(req.Partition)%len(r.shards)], nil
}

// coordinator is shard 0, which holds the consumer groups. A payload that
// is not a group operation is refused before it reaches raft.
func (r *Router) coordinator(enc []byte) (*Shard, error) {
	d := wire.Decoder{B: enc}
	op := d.GroupOp()
	if d.Finish() != nil {
		return nil, fmt.Errorf("%w: undecodable group operation", core.ErrCorrupt)
	}
	if err := op.Check(); err != nil {
		return nil, err
	}
	return r.shards[0], nil
}

func (r *Router) shardOfMembership(payload []byte) (*Shard, error) {
	d := wire.Decoder{B: payload}
	d.Byte()
	return r.shardAt(&d, "membership change")
}

func (r *Router) shardOfReadIndex(payload []byte) (*Shard, error) {
	return r.shardAt(&wire.Decoder{B: payload}, "read index request")
}

// shardAt reads a shard number from d.
func (r *Router) shardAt(d *wire.Decoder, what string) (*Shard, error) {
	s := d.Uvarint()
	if d.Err != nil || s >= uint64(len(r.shards)) {
		return nil, fmt.Errorf("raftlog: malformed %s", what)
	}
	return r.shards[s], nil
}

// applyGroupOp proposes an encoded group operation on this node, the
// leader of shard 0, and waits for its outcome.
func applyGroupOp(ctx context.Context, s *Shard, enc []byte) (core.GroupState, error) {
	data := []byte{wire.CmdGroup}
	data = binary.AppendVarint(data, time.Now().UnixNano())
	data = append(data, enc...)
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	fut := s.Raft.Apply(data, timeout)
	if err := fut.Error(); err != nil {
		return core.GroupState{}, classifyApplyError(err)
	}
	if err, ok := fut.Response().(error); ok {
		return core.GroupState{}, err // the state machine refused the entry
	}
	out, ok := fut.Response().(core.GroupOutcome)
	if !ok {
		return core.GroupState{}, fmt.Errorf("raftlog: group operation applied with response %T", fut.Response())
	}
	return out.State, out.Err
}

// applyMembership applies a membership change on this node, the leader of
// the shard the payload names.
func applyMembership(_ context.Context, s *Shard, payload []byte) (struct{}, error) {
	op, _, id, addr, err := decodeMembership(payload)
	if err != nil {
		return struct{}{}, err
	}
	var f raft.IndexFuture
	switch op {
	case OpAddVoter:
		f = s.Raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	case OpAddNonvoter:
		f = s.Raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	case OpRemove:
		f = s.Raft.RemoveServer(raft.ServerID(id), 0, 0)
	case OpRejoin:
		f = rejoinMembership(s, id, addr)
	default:
		return struct{}{}, fmt.Errorf("raftlog: unknown membership op %d", op)
	}
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return struct{}{}, &retryError{cause: err}
		}
		return struct{}{}, err
	}
	return struct{}{}, nil
}

// leaderReadIndex returns an index of s's state that covers every write
// acknowledged before the call, by any leader. Confirming leadership
// (VerifyLeader) is not enough: a leader new in its term may hold entries
// its predecessor acknowledged without knowing them committed or having
// applied them. So the index comes from a raft barrier appended after the
// call: once it commits, in this leader's term, every entry before it is
// committed and applied here, and a leader that lost its majority cannot
// commit it. Concurrent calls share one barrier per round.
func leaderReadIndex(ctx context.Context, s *Shard, _ []byte) (uint64, error) {
	ch := make(chan readIndexResult, 1)
	ri := &s.reads
	ri.mu.Lock()
	ri.waiting = append(ri.waiting, ch)
	if !ri.running {
		ri.running = true
		go s.readIndexRounds()
	}
	ri.mu.Unlock()
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, &retryError{cause: ctx.Err()}
	}
}

// readIndexRounds answers the waiting read-index requests, a barrier per
// round, until none is left.
func (s *Shard) readIndexRounds() {
	ri := &s.reads
	for {
		ri.mu.Lock()
		batch := ri.waiting
		ri.waiting = nil
		if len(batch) == 0 {
			ri.running = false
			ri.mu.Unlock()
			return
		}
		ri.mu.Unlock()
		var r readIndexResult
		if err := s.Raft.Barrier(barrierTimeout).Error(); err != nil {
			r.err = &retryError{cause: err}
		} else {
			r.index = s.Applied()
		}
		for _, ch := range batch {
			ch <- r
		}
	}
}

// LeaderWait returns a channel closed at the next leader change of s.
func (s *Shard) LeaderWait() <-chan struct{} { return s.leader.Wait() }
