package route

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Client calls: what a thin client (raftlog.Remote) asks the node it is
// connected to. Unlike the leader-run methods above, the node that
// receives one runs it itself: a write through its own leader-or-forward
// path (so it reaches the leader wherever it is), a read on its own
// replica. They travel on the same port, in the same frames, with the same
// reply codec; Config.ServeClient runs them.
//
// Every payload starts with a uvarint: the milliseconds the caller will
// wait (the node bounds it further). Reads then carry the lowest raft
// index of the partition's shard the node must have applied first (what
// the client has already seen: its own writes, a barrier), so that a
// client that fails over to a replica that lags never reads back in time.
const (
	MethodClientInfo       byte = 32 // the log's shape and limits, and the members' addresses
	MethodClientAppend     byte = 33 // an encoded append request (an append, delete or truncate)
	MethodClientRead       byte = 34 // records of a partition, or of one key
	MethodClientKeyInfo    byte = 35 // a key's state
	MethodClientHead       byte = 36 // a partition's next offset
	MethodClientWait       byte = 37 // a long poll: a partition reaching an offset, a group changing
	MethodClientBarrier    byte = 38 // a read barrier on one shard; the index the node then applied
	MethodClientGroup      byte = 39 // a consumer group operation
	MethodClientGroupState byte = 40 // a consumer group as the node applied it
	MethodClientAppends    byte = 41 // several encoded append requests, run at once; a reply each, in order
	MethodClientListKeys   byte = 42 // a page of the key index, over every partition
)

// LastClientMethod is the highest client call.
const LastClientMethod = MethodClientListKeys

// MaxClientAppends bounds the requests of one MethodClientAppends call.
const MaxClientAppends = 256

// Kinds of MethodClientWait.
const (
	WaitPartition byte = 0 // uvarint partition, uvarint offset
	WaitGroup     byte = 1 // string group, uvarint generation
)

// IsClientMethod reports whether code is a client call.
func IsClientMethod(code byte) bool {
	return code >= MethodClientInfo && code <= LastClientMethod
}

// ClientReply is the reply to a client call that ended with err, or, if
// err is nil, the result ok appends: the codec of every other call.
func ClientReply(err error, ok func([]byte) []byte) []byte { return encodeReply(err, ok) }

// ClientResult reads a client call's reply: a decoder positioned at the
// result, or the error the node sent (errors.Is its sentinel, errors.As
// *KeySeqError or *StaleGenerationError).
func ClientResult(resp []byte) (*wire.Decoder, error) { return decodeReply(resp) }

// Retryable classifies the error of a client call (from mux.Client.Call or
// ClientResult): whether it may be retried, on this node or another, and
// whether the failed attempt may have been applied. A connection that broke
// after the request was sent may have carried it.
func Retryable(err error) (retry, unknown bool) {
	var re *retryError
	switch {
	case errors.As(err, &re):
		return true, re.unknown
	case errors.Is(err, mux.ErrConnection):
		return true, true
	}
	return false, false
}

// ClientAppend runs an append request a client sent, already encoded with
// every record's ID: checked as a forwarded one is, then through the one
// leader-or-forward path, retried there until ctx ends.
func (r *Router) ClientAppend(ctx context.Context, enc []byte) (core.AppendResult, error) {
	s, err := r.forwardedAppend(enc)
	if err != nil {
		return core.AppendResult{}, err
	}
	return r.Append(ctx, s, enc)
}

// ClientAppends runs the append requests of one client call. Those of a
// shard this node leads go to its group commit together (SubmitAll), so
// that they share an entry; the others, and any of those that may be
// retried, go through ClientAppend one by one, at once. It returns each
// request's outcome, in order.
func (r *Router) ClientAppends(ctx context.Context, encs [][]byte) ([]core.AppendResult, []error) {
	results, errs := make([]core.AppendResult, len(encs)), make([]error, len(encs))
	byShard := map[*Shard][]int{}
	for i, enc := range encs {
		s, err := r.forwardedAppend(enc)
		if err != nil {
			errs[i] = err
			continue
		}
		byShard[s] = append(byShard[s], i)
	}
	var alone []int
	for s, idx := range byShard {
		if _, id := s.Raft.LeaderWithID(); id != r.self || len(idx) == 1 {
			alone = append(alone, idx...)
			continue
		}
		group := make([][]byte, len(idx))
		for j, i := range idx {
			group[j] = encs[i]
		}
		for j, rep := range s.Batcher.SubmitAll(ctx, group) {
			var re *retryError
			if errors.As(rep.err, &re) && ctx.Err() == nil {
				alone = append(alone, idx[j]) // not leader any more, or lost: retried
				continue
			}
			results[idx[j]], errs[idx[j]] = rep.res, rep.err
		}
	}
	var wg sync.WaitGroup
	for _, i := range alone {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = r.ClientAppend(ctx, encs[i])
		}()
	}
	wg.Wait()
	return results, errs
}

// AppendAppendResult and DecodeAppendResult are the encoding of an
// append's result, as the leader sends it back.
func AppendAppendResult(b []byte, res core.AppendResult) []byte { return encodeAppendResult(b, res) }

// DecodeAppendResult reads what AppendAppendResult wrote.
func DecodeAppendResult(d *wire.Decoder) core.AppendResult { return decodeAppendResult(d) }

// AppendGroupState appends the encoding of a consumer group's state, as
// the coordinator sends it back.
func AppendGroupState(b []byte, st core.GroupState) []byte { return groupMethod.encode(b, st) }

// DecodeGroupState reads what AppendGroupState wrote; it consumes the rest
// of d.
func DecodeGroupState(d *wire.Decoder) core.GroupState { return decodeGroupState(d) }

// AppendRecords appends records read from one partition: a count, then
// per record its offset, key, key sequence, ID, time, headers and value.
func AppendRecords(b []byte, recs []core.Record) []byte {
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for i := range recs {
		r := &recs[i]
		b = binary.AppendUvarint(b, r.Offset)
		b = wire.AppendString(b, r.Key)
		b = binary.AppendUvarint(b, r.KeySeq)
		b = append(b, r.ID[:]...)
		b = binary.AppendVarint(b, r.Time.UnixNano())
		b = wire.AppendHeaders(b, r.Headers)
		b = wire.AppendBytes(b, r.Value)
	}
	return b
}

// DecodeRecords reads what AppendRecords wrote, for partition p.
func DecodeRecords(d *wire.Decoder, p core.Partition) []core.Record {
	// The smallest record: offset, key length, sequence, ID, time,
	// header count, value length.
	n := d.Count(1 + 1 + 1 + 16 + 1 + 1 + 1)
	if n == 0 {
		return nil
	}
	recs := make([]core.Record, n)
	for i := range recs {
		r := &recs[i]
		r.Partition = p
		r.Offset = d.Uvarint()
		r.Key = d.Str()
		r.KeySeq = d.Uvarint()
		r.ID = d.ID()
		r.Time = time.Unix(0, d.Varint()).UTC()
		r.Headers = d.Headers()
		r.Value = d.Bytes()
	}
	if d.Err != nil {
		return nil
	}
	return recs
}

// AppendAppends encodes the requests of a MethodClientAppends call: a
// count, then each encoded request as bytes.
func AppendAppends(b []byte, encs [][]byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(encs)))
	for _, enc := range encs {
		b = wire.AppendBytes(b, enc)
	}
	return b
}

// DecodeAppends reads what AppendAppends wrote: 1 to MaxClientAppends
// requests, or nil with d failed.
func DecodeAppends(d *wire.Decoder) [][]byte { return decodeBlobs(d, 0) }

// AppendReplies encodes the result of a MethodClientAppends call: a
// count, then each request's reply (ClientReply) as bytes, in the order
// of the requests.
func AppendReplies(b []byte, replies [][]byte) []byte { return AppendAppends(b, replies) }

// DecodeReplies reads what AppendReplies wrote for n requests, or nil
// with d failed if it holds another number.
func DecodeReplies(d *wire.Decoder, n int) [][]byte { return decodeBlobs(d, n) }

// decodeBlobs reads a count and as many byte strings: exactly n of them,
// or, if n is 0, 1 to MaxClientAppends. Anything else fails d.
func decodeBlobs(d *wire.Decoder, n int) [][]byte {
	m := d.Count(1)
	if d.Err != nil || (n > 0 && m != n) || (n == 0 && (m == 0 || m > MaxClientAppends)) {
		d.Fail()
		return nil
	}
	blobs := make([][]byte, m)
	for i := range blobs {
		blobs[i] = d.Bytes()
	}
	if d.Err != nil {
		return nil
	}
	return blobs
}

// AppendListedKeys encodes a page of keys (MethodClientListKeys' result):
// a count, then per key its name, partition, sequence and deleted flag.
func AppendListedKeys(b []byte, keys []core.ListedKey) []byte {
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = wire.AppendString(b, k.Key)
		b = binary.AppendUvarint(b, uint64(k.Partition))
		b = binary.AppendUvarint(b, k.Seq)
		b = appendBool(b, k.Deleted)
	}
	return b
}

// DecodeListedKeys reads what AppendListedKeys wrote: at most max keys,
// each of a partition below partitions; anything else fails d.
func DecodeListedKeys(d *wire.Decoder, max, partitions int) []core.ListedKey {
	n := d.Count(4)
	if n > max {
		d.Fail()
	}
	if d.Err != nil || n == 0 {
		return nil
	}
	keys := make([]core.ListedKey, n)
	for i := range keys {
		k := &keys[i]
		k.Key = d.Str()
		p := d.Uvarint()
		k.Seq = d.Uvarint()
		switch d.Byte() {
		case 0:
		case 1:
			k.Deleted = true
		default:
			d.Fail()
		}
		if p >= uint64(partitions) {
			d.Fail()
		}
		k.Partition = core.Partition(p)
	}
	if d.Err != nil {
		return nil
	}
	return keys
}
