package route

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// MethodRetention runs a retention operation (wire.RetentionOp) on the
// leader of the shard its payload names: uvarint shard, then the encoded
// operation. The leader stamps it with its time and proposes it; the
// result is the raft index it applied at.
const MethodRetention byte = 8

var retentionMethod = method[uint64]{
	code: MethodRetention, shard: (*Router).shardOfRetention, local: applyRetention,
	encode: binary.AppendUvarint, decode: (*wire.Decoder).Uvarint,
}

// Retention runs op on shard s's leader and returns the index it was
// applied at. Retention operations set a state, so a retry after an
// unknown outcome applies the same state again.
func (r *Router) Retention(ctx context.Context, s *Shard, op *wire.RetentionOp) (uint64, error) {
	if err := op.Check(r.partitions); err != nil {
		return 0, err
	}
	payload := binary.AppendUvarint(nil, uint64(s.ID))
	return onLeader(ctx, r, s, retentionMethod, wire.EncodeRetentionOp(payload, op))
}

// decodeRetention reads a MethodRetention payload, checked as the state
// machine checks it: only what passes is proposed.
func (r *Router) decodeRetention(payload []byte) (*Shard, wire.RetentionOp, error) {
	d := wire.Decoder{B: payload}
	s := d.Uvarint()
	op := d.RetentionOp()
	if err := d.Finish(); err != nil || s >= uint64(len(r.shards)) {
		return nil, op, fmt.Errorf("%w: malformed retention operation", core.ErrCorrupt)
	}
	if err := op.Check(r.partitions); err != nil {
		return nil, op, err
	}
	return r.shards[s], op, nil
}

func (r *Router) shardOfRetention(payload []byte) (*Shard, error) {
	s, _, err := r.decodeRetention(payload)
	return s, err
}

// applyRetention proposes a retention operation on this node, the leader
// of its shard, stamped with this node's time, and waits for its outcome.
func applyRetention(ctx context.Context, s *Shard, payload []byte) (uint64, error) {
	d := wire.Decoder{B: payload}
	d.Uvarint()
	op := d.RetentionOp()
	if err := d.Finish(); err != nil {
		return 0, fmt.Errorf("%w: malformed retention operation", core.ErrCorrupt)
	}
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	fut := s.Raft.Apply(wire.EncodeRetentionEntry(time.Now().UnixNano(), &op), timeout)
	if err := fut.Error(); err != nil {
		return 0, classifyApplyError(err)
	}
	if err, ok := fut.Response().(error); ok {
		return 0, err // the state machine refused it
	}
	return fut.Index(), nil
}
