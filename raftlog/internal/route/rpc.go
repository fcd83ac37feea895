package route

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Node-to-node calls, carried by the mux's RPC service on the cluster
// address. Every call but MethodJoin, MethodProbe and MethodRejoin is run
// by the leader of one shard (a node that does not lead it answers
// replyNotLeader and never forwards again, so a stale view of the leader
// costs one round trip) and has its descriptor in the table below.
const (
	MethodAppend     byte = 1 // an encoded append request, run on its shard's leader
	MethodMembership byte = 2 // a membership change of one shard, run on its leader
	MethodJoin       byte = 3 // a new node asks to be added to every shard
	MethodGroup      byte = 4 // a consumer group operation, run on shard 0's leader
	MethodReadIndex  byte = 5 // a shard's applied index, from its leader (the read barrier)
	MethodProbe      byte = 6 // a node's own state (NodeState), answered by that node
	MethodRejoin     byte = 7 // a node with no data asks to be (re)added to every shard as a non-voter
)

// Reply status bytes: the first byte of every reply.
const (
	replyOK         byte = 0 // the method's result follows
	replyNotLeader  byte = 1 // definitely not applied: retry on the leader
	replyUnknown    byte = 2 // may have been applied: retry with the same IDs
	replyKeySeq     byte = 3 // a *KeySeqError follows
	replyError      byte = 4 // an error without a sentinel: its text follows
	replyIDConflict byte = 5
	replyPartition  byte = 6
	replyDeleted    byte = 7
	replyStale      byte = 8 // a *StaleGenerationError follows
	replyMember     byte = 9
	replyDenied     byte = 10 // the caller may not make this call
	replyNoGroup    byte = 11
	replyActive     byte = 12
	replyBehind     byte = 13
	replyDiskFull   byte = 14 // the leader cannot write its state: nothing was proposed
	replyBusy       byte = 15 // definitely not applied: the node has too many client calls in progress
	// Validation sentinels, which only client calls can meet: a forwarded
	// append was validated by the node that took it.
	replyEmptyKey       byte = 16
	replyEmptyBatch     byte = 17
	replyRecordTooLarge byte = 18
	replyBatchTooLarge  byte = 19
	replyDuplicateID    byte = 20
	replyConfig         byte = 21
	replyCorrupt        byte = 22
)

// sentinelReplies map the sentinel errors a leader returns to reply codes
// and back; the error's text travels with the code.
var sentinelReplies = []struct {
	code byte
	err  error
}{
	{replyIDConflict, core.ErrIDConflict},
	{replyPartition, core.ErrUnknownPartition},
	{replyDeleted, core.ErrKeyDeleted},
	{replyMember, core.ErrUnknownMember},
	{replyDenied, core.ErrUnauthorized},
	{replyNoGroup, core.ErrUnknownGroup},
	{replyActive, core.ErrGroupActive},
	{replyBehind, core.ErrCommitBehind},
	{replyDiskFull, core.ErrDiskFull},
	{replyEmptyKey, core.ErrEmptyKey},
	{replyEmptyBatch, core.ErrEmptyBatch},
	{replyRecordTooLarge, core.ErrRecordTooLarge},
	{replyBatchTooLarge, core.ErrBatchTooLarge},
	{replyDuplicateID, core.ErrDuplicateID},
	{replyConfig, core.ErrConfig},
	{replyCorrupt, core.ErrCorrupt},
}

// method describes one leader-run call: how its payload finds its shard,
// how the leader runs it, and how its result travels in a replyOK.
type method[T any] struct {
	code   byte
	shard  func(r *Router, payload []byte) (*Shard, error)
	local  func(ctx context.Context, s *Shard, payload []byte) (T, error)
	encode func(b []byte, v T) []byte
	decode func(d *wire.Decoder) T
}

// The table of leader-run methods.
var (
	appendMethod = method[core.AppendResult]{
		code: MethodAppend, shard: (*Router).forwardedAppend,
		local: func(ctx context.Context, s *Shard, enc []byte) (core.AppendResult, error) {
			return s.Batcher.Submit(ctx, enc)
		},
		encode: encodeAppendResult, decode: decodeAppendResult,
	}
	groupMethod = method[core.GroupState]{
		code: MethodGroup, shard: (*Router).coordinator, local: applyGroupOp,
		encode: func(b []byte, st core.GroupState) []byte {
			return cgroup.Encode(wire.AppendString(b, st.Group), cgroup.FromState(&st))
		},
		decode: decodeGroupState,
	}
	membershipMethod = method[struct{}]{
		code: MethodMembership, shard: (*Router).shardOfMembership, local: applyMembership,
		encode: func(b []byte, _ struct{}) []byte { return b },
		decode: func(*wire.Decoder) struct{} { return struct{}{} },
	}
	readIndexMethod = method[uint64]{
		code: MethodReadIndex, shard: (*Router).shardOfReadIndex, local: leaderReadIndex,
		encode: binary.AppendUvarint, decode: (*wire.Decoder).Uvarint,
	}
)

// serve runs a forwarded call if this node leads its shard.
func (m method[T]) serve(ctx context.Context, r *Router, payload []byte) []byte {
	s, err := m.shard(r, payload)
	if err != nil {
		return encodeReply(err, nil)
	}
	if s.Raft.State() != raft.Leader {
		return []byte{replyNotLeader}
	}
	v, err := m.local(ctx, s, payload)
	return encodeReply(err, func(b []byte) []byte { return m.encode(b, v) })
}

// encodeReply is the reply of a call that ended with err, or, if err is
// nil, replyOK with the result ok appends.
func encodeReply(err error, ok func([]byte) []byte) []byte {
	var re *retryError
	var kse *core.KeySeqError
	var sge *core.StaleGenerationError
	switch {
	case err == nil:
		return ok([]byte{replyOK})
	case errors.As(err, &re):
		if re.unknown {
			return []byte{replyUnknown}
		}
		return []byte{replyNotLeader}
	case errors.Is(err, core.ErrBusy):
		return []byte{replyBusy}
	case errors.Is(err, core.ErrNoLeader) && !errors.Is(err, core.ErrUnknownOutcome):
		// A call that gave up before any attempt could have applied
		// (GiveUp without unknown): definitely not applied.
		return []byte{replyNotLeader}
	case errors.Is(err, core.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return []byte{replyUnknown}
	case errors.As(err, &kse):
		b := []byte{replyKeySeq}
		b = binary.AppendUvarint(b, uint64(kse.Partition))
		b = wire.AppendString(b, kse.Key)
		b = append(b, byte(kse.Condition))
		b = binary.AppendUvarint(b, kse.Expected)
		b = binary.AppendUvarint(b, kse.Actual)
		return appendBool(b, kse.Deleted)
	case errors.As(err, &sge):
		b := []byte{replyStale}
		b = wire.AppendString(b, sge.Group)
		b = wire.AppendString(b, sge.Member)
		b = binary.AppendUvarint(b, uint64(sge.Partition))
		b = binary.AppendUvarint(b, sge.Generation)
		b = binary.AppendUvarint(b, sge.Current)
		return wire.AppendString(b, sge.Owner)
	}
	for _, s := range sentinelReplies {
		if errors.Is(err, s.err) {
			return wire.AppendString([]byte{s.code}, err.Error())
		}
	}
	return wire.AppendString([]byte{replyError}, err.Error())
}

// decodeReply reads a reply's status: a decoder positioned at the result
// of a replyOK, or the error the reply carries. A reply that cannot be
// decoded is an unknown outcome.
func decodeReply(b []byte) (*wire.Decoder, error) {
	d := &wire.Decoder{B: b}
	var err error
	switch code := d.Byte(); code {
	case replyOK:
		return d, nil
	case replyNotLeader:
		err = &retryError{cause: raft.ErrNotLeader}
	case replyUnknown:
		err = &retryError{unknown: true, cause: raft.ErrLeadershipLost}
	case replyBusy:
		err = &retryError{cause: core.ErrBusy}
	case replyKeySeq:
		kse := &core.KeySeqError{Partition: core.Partition(d.Uvarint()), Key: d.Str(), Condition: core.KeyCondition(d.Byte())}
		kse.Expected, kse.Actual, kse.Deleted = d.Uvarint(), d.Uvarint(), d.Byte() == 1
		err = kse
	case replyStale:
		err = &core.StaleGenerationError{Group: d.Str(), Member: d.Str(), Partition: core.Partition(d.Uvarint()), Generation: d.Uvarint(), Current: d.Uvarint(), Owner: d.Str()}
	case replyError:
		err = errors.New(d.Str())
	default:
		err = remoteSentinel(code, d)
	}
	if d.Err != nil {
		return nil, undecodable(d.Err)
	}
	return nil, err
}

// remoteSentinel is the error of a sentinel reply code: the leader's
// text, matching our sentinel.
func remoteSentinel(code byte, d *wire.Decoder) error {
	for _, s := range sentinelReplies {
		if s.code == code {
			return &remoteError{sentinel: s.err, msg: d.Str()}
		}
	}
	d.Fail()
	return nil
}

func undecodable(err error) error {
	return &retryError{unknown: true, cause: fmt.Errorf("raftlog: undecodable reply: %w", err)}
}

// remoteError keeps a leader's error text while matching our sentinel.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func encodeAppendResult(b []byte, res core.AppendResult) []byte {
	b = binary.AppendUvarint(b, uint64(res.Partition))
	b = binary.AppendUvarint(b, res.FirstOffset)
	b = binary.AppendUvarint(b, res.FirstKeySeq)
	b = binary.AppendUvarint(b, uint64(res.Count))
	b = binary.AppendVarint(b, res.Time.UnixNano())
	b = binary.AppendUvarint(b, uint64(res.Position.Shard))
	b = binary.AppendUvarint(b, res.Position.Index)
	return appendBool(b, res.Duplicate)
}

func decodeAppendResult(d *wire.Decoder) core.AppendResult {
	var res core.AppendResult
	res.Partition = core.Partition(d.Uvarint())
	res.FirstOffset = d.Uvarint()
	res.FirstKeySeq = d.Uvarint()
	res.Count = int(d.Uvarint())
	res.Time = time.Unix(0, d.Varint()).UTC()
	res.Position.Shard = core.Shard(d.Uvarint())
	res.Position.Index = d.Uvarint()
	res.Duplicate = d.Byte() == 1
	return res
}

// decodeGroupState reads a group's state: its name, then the stored form
// of the group.
func decodeGroupState(d *wire.Decoder) core.GroupState {
	name := d.Str()
	if d.Err != nil {
		return core.GroupState{}
	}
	g, err := cgroup.Decode(d.B)
	d.B = nil
	if err != nil {
		d.Err = err
		return core.GroupState{}
	}
	return g.State(name)
}
