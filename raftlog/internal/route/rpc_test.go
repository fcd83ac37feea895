package route

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// decodeAppendReply decodes a forwarded append's reply as forward does.
func decodeAppendReply(b []byte) (core.AppendResult, error) {
	d, err := decodeReply(b)
	if err != nil {
		return core.AppendResult{}, err
	}
	res := decodeAppendResult(d)
	if d.Err != nil {
		return core.AppendResult{}, undecodable(d.Err)
	}
	return res, nil
}

func encodeAppendReply(res core.AppendResult, err error) []byte {
	return encodeReply(err, func(b []byte) []byte { return encodeAppendResult(b, res) })
}

func TestRepliesRoundTrip(t *testing.T) {
	for _, res := range []core.AppendResult{
		{Partition: 3, FirstOffset: 10, FirstKeySeq: 2, Count: 4, Time: time.Unix(0, 77).UTC(), Position: core.Position{Shard: 1, Index: 900}, Duplicate: true},
	} {
		got, err := decodeAppendReply(encodeAppendReply(res, nil))
		require.NoError(t, err)
		require.Equal(t, res, got)
	}
	for _, want := range []core.KeySeqError{
		{Partition: 1, Key: "x", Expected: 2, Actual: 5},
		{Partition: 2, Key: "y", Condition: core.CondExists, Actual: 3, Deleted: true},
		{Partition: 3, Key: "z", Condition: core.CondAbsent, Actual: 4},
	} {
		_, err := decodeAppendReply(encodeAppendReply(core.AppendResult{}, &want))
		var kse *core.KeySeqError
		require.ErrorAs(t, err, &kse)
		require.Equal(t, want, *kse)
	}
	for _, sentinel := range []error{core.ErrKeyDeleted, core.ErrIDConflict, core.ErrUnknownPartition, core.ErrUnknownMember, core.ErrUnknownGroup, core.ErrGroupActive, core.ErrCommitBehind, core.ErrDiskFull} {
		_, err := decodeAppendReply(encodeAppendReply(core.AppendResult{}, sentinel))
		require.ErrorIs(t, err, sentinel)
	}
	want := core.StaleGenerationError{Group: "g", Member: "m", Partition: 3, Generation: 4, Current: 5, Owner: "o"}
	_, err := decodeReply(encodeReply(&want, nil))
	var sge *core.StaleGenerationError
	require.ErrorAs(t, err, &sge)
	require.Equal(t, want, *sge)

	st := core.GroupState{Group: "g", Generation: 2, Members: []core.GroupMember{{ID: "m", SessionTimeout: time.Second, LastSeen: time.Unix(5, 0).UTC()}},
		Partitions: []core.PartitionAssignment{{Partition: 0, Owner: "m", Generation: 2, Committed: 7}}}
	d, err := decodeReply(encodeReply(nil, func(b []byte) []byte { return groupMethod.encode(b, st) }))
	require.NoError(t, err)
	require.Equal(t, st, decodeGroupState(d))
	require.NoError(t, d.Err)

	for _, code := range []byte{replyNotLeader, replyUnknown} {
		_, err := decodeReply([]byte{code})
		var re *retryError
		require.ErrorAs(t, err, &re)
		require.Equal(t, code == replyUnknown, re.unknown)
	}
}

// FuzzReplies feeds arbitrary bytes to the reply decoders: none may panic.
func FuzzReplies(f *testing.F) {
	for _, s := range [][]byte{
		encodeAppendReply(core.AppendResult{Count: 1}, nil),
		encodeReply(nil, func(b []byte) []byte {
			return groupMethod.encode(b, core.GroupState{Group: "g", Generation: 2, Partitions: []core.PartitionAssignment{{Owner: "m"}}})
		}),
		encodeReply(&core.KeySeqError{Key: "k"}, nil),
		{}, {replyIDConflict}, {0xff},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAppendReply(b)
		if d, err := decodeReply(b); err == nil {
			decodeGroupState(d)
		}
	})
}

// FuzzRequests feeds arbitrary bytes to the decoding of every node-to-node
// request a node serves (a forwarded append, a group operation, a
// membership change, a read index, a join): none may panic, and only a
// request that decodes and passes validation names a shard.
func FuzzRequests(f *testing.F) {
	good := wire.Request{Partition: 3, Key: "k", Records: []core.NewRecord{{ID: uuid.New(), Value: []byte("v")}}}
	f.Add(wire.EncodeRequest(nil, &good))
	f.Add(wire.EncodeGroupOp(nil, &wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: "m", Session: 5}))
	f.Add([]byte{OpAddVoter, 0, 2, 'n', '1', 4, 'a', ':', '1', '2'})
	f.Add(wire.EncodeRetentionOp([]byte{1}, &wire.RetentionOp{Kind: wire.RetKey, Partition: 1, Key: "k", MaxCount: 3}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{})
	shards := []*Shard{{ID: 0}, {ID: 1}}
	r := New(Config{Self: "n1", Partitions: 8, Shards: shards, Validate: func(req *wire.Request) error {
		if req.Key == "" {
			return core.ErrEmptyKey
		}
		return nil
	}})
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := r.forwardedAppend(b); err == nil {
			req, derr := wire.DecodeRequest(b)
			if derr != nil || int(req.Partition)%len(shards) != int(s.ID) {
				t.Fatalf("forwarded append accepted for the wrong shard or undecodable: %v", derr)
			}
		}
		r.coordinator(b)
		r.shardOfMembership(b)
		r.shardOfReadIndex(b)
		if s, op, err := r.decodeRetention(b); err == nil && (s == nil || op.Check(8) != nil) {
			t.Fatalf("retention operation accepted unchecked: %+v", op)
		}
		decodeJoin(b)
		decodeMembership(b)
		if id, addr, err := decodeRejoin(b); err == nil && (id == "" || addr == "") {
			t.Fatalf("rejoin request without a node accepted")
		}
		// Authorization reads the node a call names through the same
		// decoder as the call's handler.
		for _, code := range []byte{MethodAppend, MethodMembership, MethodJoin, MethodGroup, MethodReadIndex, MethodProbe, MethodRejoin} {
			callOf(code, b)
		}
	})
}

// FuzzProbeReply feeds arbitrary bytes to the decoder of a probe's answer
// (NodeState), which a node without data decides on: it must not panic,
// and what decodes must encode back to an answer that decodes the same.
func FuzzProbeReply(f *testing.F) {
	for _, st := range []NodeState{
		{NodeID: "n1", ClusterID: uuid.NewString(), HasState: true, Members: []string{"n1", "n2", "n3"},
			Shards: []ShardState{{LastIndex: 90, CommitIndex: 88, Applied: 88, LeaderID: "n2"}, {LastIndex: 7, CommitIndex: 7, Applied: 6}}},
		{NodeID: "n2", Incarnation: uuid.NewString()},
		{NodeID: "n3", HasState: true, FormedWith: map[string]string{"n1": "a", "n2": "b"}, Members: []string{"n3"}},
	} {
		f.Add(encodeNodeState(st))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeNodeState(b)
		if err != nil {
			return
		}
		again, err := decodeNodeState(encodeNodeState(st))
		require.NoError(t, err)
		require.Equal(t, st, again)
	})
}
