package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// The node's side of the client calls (route.MethodClient*): what a
// Remote connected to this node asks of it. Each call is bounded in time
// (the caller's wait, at most maxClientWait for a long poll and
// maxClientCall for anything else), in size (reads at most
// maxClientReadRecords records and maxClientReadBytes bytes, key pages
// MaxListKeys keys, a call of several appends route.MaxClientAppends),
// and in number (Config.MaxClientCalls at once, a call of several appends
// counting as one); a payload that does not decode is refused with
// ErrCorrupt and changes nothing.
const (
	maxClientCall        = 30 * time.Second
	maxClientWait        = 10 * time.Second
	maxClientReadRecords = 10000
	maxClientReadBytes   = 16 << 20
)

// serveClient runs one client call (route.Config.ServeClient).
func (l *Log) serveClient(ctx context.Context, code byte, payload []byte) []byte {
	if l.clientCalls != nil {
		select {
		case l.clientCalls <- struct{}{}:
			defer func() { <-l.clientCalls }()
		default:
			return route.ClientReply(fmt.Errorf("%w: %d client calls in progress", ErrBusy, cap(l.clientCalls)), nil)
		}
	}
	d := &wire.Decoder{B: payload}
	limit := maxClientCall
	if code == route.MethodClientWait {
		limit = maxClientWait
	}
	wait := min(time.Duration(min(d.Uvarint(), uint64(limit/time.Millisecond)))*time.Millisecond, limit)
	if wait <= 0 {
		wait = limit
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ok, err := l.clientCall(ctx, code, d)
	if err == nil && d.Err != nil {
		err = fmt.Errorf("%w: client call %d: malformed payload", ErrCorrupt, code)
	}
	if err != nil {
		return route.ClientReply(err, nil)
	}
	return route.ClientReply(nil, ok)
}

// clientCall decodes and runs a call; the reply's result is what the
// returned function appends. A decoding error is left in d.
func (l *Log) clientCall(ctx context.Context, code byte, d *wire.Decoder) (func([]byte) []byte, error) {
	switch code {
	case route.MethodClientInfo:
		if d.Finish() != nil {
			return nil, nil
		}
		return l.appendClientInfo, nil
	case route.MethodClientAppend:
		if d.Err != nil || len(d.B) == 0 {
			d.Fail()
			return nil, nil
		}
		res, err := l.router.ClientAppend(ctx, d.B)
		if err != nil {
			return nil, err
		}
		return func(b []byte) []byte { return route.AppendAppendResult(b, res) }, nil
	case route.MethodClientAppends:
		encs := route.DecodeAppends(d)
		if d.Finish() != nil {
			return nil, nil
		}
		replies := l.clientAppends(ctx, encs)
		return func(b []byte) []byte { return route.AppendReplies(b, replies) }, nil
	case route.MethodClientRead:
		return l.clientRead(ctx, d)
	case route.MethodClientListKeys:
		return l.clientListKeys(ctx, d)
	case route.MethodClientKeyInfo:
		minIndex, p, key := d.Uvarint(), Partition(d.Uvarint()), d.Str()
		if d.Finish() != nil {
			return nil, nil
		}
		if err := l.clientSync(ctx, p, minIndex); err != nil {
			return nil, err
		}
		k, err := l.KeyInfo(ctx, p, key)
		if err != nil {
			return nil, err
		}
		return func(b []byte) []byte {
			b = binary.AppendUvarint(b, k.Seq)
			b = binary.AppendUvarint(b, k.First)
			return appendFlag(b, k.Deleted)
		}, nil
	case route.MethodClientHead:
		minIndex, p := d.Uvarint(), Partition(d.Uvarint())
		if d.Finish() != nil {
			return nil, nil
		}
		if err := l.clientSync(ctx, p, minIndex); err != nil {
			return nil, err
		}
		next, err := l.NextOffset(p)
		if err != nil {
			return nil, err
		}
		return func(b []byte) []byte { return binary.AppendUvarint(b, next) }, nil
	case route.MethodClientWait:
		return l.clientWait(ctx, d)
	case route.MethodClientBarrier:
		s := Shard(d.Uvarint())
		if d.Finish() != nil {
			return nil, nil
		}
		if err := l.ReadBarrier(ctx, s); err != nil {
			return nil, err
		}
		pos, err := l.Applied(s)
		if err != nil {
			return nil, err
		}
		return func(b []byte) []byte { return binary.AppendUvarint(b, pos.Index) }, nil
	case route.MethodClientGroup:
		op := d.GroupOp()
		if d.Finish() != nil {
			return nil, nil
		}
		if err := l.authorizeGroupAdmin(ctx, &op); err != nil {
			return nil, err
		}
		st, err := l.groupCall(ctx, &op)
		if err != nil {
			return nil, err
		}
		return func(b []byte) []byte { return route.AppendGroupState(b, st) }, nil
	case route.MethodClientGroupState:
		minIndex, group := d.Uvarint(), d.Str()
		if d.Finish() != nil {
			return nil, nil
		}
		if err := l.WaitApplied(ctx, Position{Shard: 0, Index: minIndex}); err != nil {
			return nil, err
		}
		st, ok, err := l.GroupState(group)
		if err != nil {
			return nil, err
		}
		return func(b []byte) []byte {
			if !ok {
				return append(b, 0)
			}
			return route.AppendGroupState(append(b, 1), st)
		}, nil
	}
	return nil, fmt.Errorf("raftlog: unknown client call %d", code)
}

// clientAppends runs the append requests of one client call together
// (route.Router.ClientAppends) and returns each one's reply, in order.
func (l *Log) clientAppends(ctx context.Context, encs [][]byte) [][]byte {
	results, errs := l.router.ClientAppends(ctx, encs)
	replies := make([][]byte, len(encs))
	for i := range encs {
		replies[i] = route.ClientReply(errs[i], func(b []byte) []byte { return route.AppendAppendResult(b, results[i]) })
	}
	return replies
}

// clientSync waits until this node has applied minIndex of partition p's
// shard: the client has seen that much, and reads must not go back.
func (l *Log) clientSync(ctx context.Context, p Partition, minIndex uint64) error {
	s, err := l.readable(p)
	if err != nil {
		return err
	}
	return l.WaitApplied(ctx, Position{Shard: s.ID, Index: minIndex})
}

// clientRead reads a partition (no key) or one key of it.
func (l *Log) clientRead(ctx context.Context, d *wire.Decoder) (func([]byte) []byte, error) {
	minIndex, p, from := d.Uvarint(), Partition(d.Uvarint()), d.Uvarint()
	opt := ReadOptions{MaxRecords: int(min(d.Uvarint(), maxClientReadRecords)), MaxBytes: int(min(d.Uvarint(), maxClientReadBytes))}
	byKey := d.Byte() == 1
	key := d.Str()
	if d.Finish() != nil {
		return nil, nil
	}
	if err := l.clientSync(ctx, p, minIndex); err != nil {
		return nil, err
	}
	var recs []Record
	var err error
	if byKey {
		recs, err = l.ReadKey(ctx, p, key, from, opt)
	} else {
		recs, err = l.Read(ctx, p, from, opt)
	}
	if err != nil {
		return nil, err
	}
	return func(b []byte) []byte { return route.AppendRecords(b, recs) }, nil
}

// clientListKeys lists a page of keys once this node has applied, in
// every shard, what the client has seen.
func (l *Log) clientListKeys(ctx context.Context, d *wire.Decoder) (func([]byte) []byte, error) {
	n := d.Count(1)
	if n != len(l.shards) {
		d.Fail()
		return nil, nil
	}
	seen := make([]uint64, n)
	for i := range seen {
		seen[i] = d.Uvarint()
	}
	prefix, after, limit := d.Str(), d.Str(), d.Uvarint()
	if d.Finish() != nil {
		return nil, nil
	}
	for s, index := range seen {
		if err := l.WaitApplied(ctx, Position{Shard: Shard(s), Index: index}); err != nil {
			return nil, err
		}
	}
	keys, err := l.ListKeys(ctx, prefix, after, int(min(limit, MaxListKeys)))
	if err != nil {
		return nil, err
	}
	return func(b []byte) []byte { return route.AppendListedKeys(b, keys) }, nil
}

// clientWait is a long poll: it answers 1 once the condition holds, 0 if
// the call's time ran out first (the client asks again).
func (l *Log) clientWait(ctx context.Context, d *wire.Decoder) (func([]byte) []byte, error) {
	var err error
	switch kind := d.Byte(); kind {
	case route.WaitPartition:
		p, offset := Partition(d.Uvarint()), d.Uvarint()
		if d.Finish() != nil {
			return nil, nil
		}
		err = l.Wait(ctx, p, offset)
	case route.WaitGroup:
		group, gen := d.Str(), d.Uvarint()
		if d.Finish() != nil {
			return nil, nil
		}
		err = l.WaitGroupChange(ctx, group, gen)
	default:
		d.Fail()
		return nil, nil
	}
	switch {
	case err == nil:
		return func(b []byte) []byte { return append(b, 1) }, nil
	case errors.Is(err, context.DeadlineExceeded) && !l.isClosed():
		return func(b []byte) []byte { return append(b, 0) }, nil
	}
	return nil, err
}

// appendClientInfo is the answer to MethodClientInfo: the log's shape and
// limits, this node's ID and the cluster's, and the cluster addresses of
// the members, for the client to fail over to.
func (l *Log) appendClientInfo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(l.cfg.Partitions))
	b = binary.AppendUvarint(b, uint64(l.cfg.Shards))
	b = binary.AppendUvarint(b, uint64(l.cfg.MaxBatchRecords))
	b = wire.AppendString(b, l.cfg.NodeID)
	b = wire.AppendString(b, l.ClusterID())
	addrs := l.memberAddrs()
	b = binary.AppendUvarint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = wire.AppendString(b, a)
	}
	return b
}

// memberAddrs are the cluster addresses of every shard's members, in the
// order the configurations list them, each once.
func (l *Log) memberAddrs() []string {
	var out []string
	seen := map[string]bool{}
	if !l.router.IsRunning() {
		return nil
	}
	for _, s := range l.shards {
		f := s.Raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		for _, srv := range f.Configuration().Servers {
			if a := string(srv.Address); a != "" && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

func appendFlag(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// authorizeGroupAdmin refuses a thin client with a worker certificate the
// operator's group operations that lose or move work, reset, delete and
// skipping a parked record: a worker consumes; moving a group's offsets or
// dropping its state or events is for an operator, through a
// node's admin API or a node certificate. (Without TLS, client calls come
// from loopback only.)
func (l *Log) authorizeGroupAdmin(ctx context.Context, op *wire.GroupOp) error {
	if l.tls == nil || (op.Op != wire.GopReset && op.Op != wire.GopForceReset && op.Op != wire.GopDelete && op.Op != wire.GopSkip) {
		return nil
	}
	peer, _ := mux.PeerFromContext(ctx)
	id, err := l.tls.identify(peer)
	if err != nil {
		return err
	}
	if id.Role == nodecert.Worker {
		return fmt.Errorf("%w: %s: a worker certificate may not reset or delete consumer group %q nor skip its parked records; use a node's admin API",
			ErrUnauthorized, id, op.Group)
	}
	return nil
}
