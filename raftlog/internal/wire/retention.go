package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// CmdRetention changes a shard's retention settings (or only advances its
// time): the command byte, the leader's time (varint, Unix nanoseconds),
// then one RetentionOp:
//
//	byte     kind (RetKey, RetPrefix, RetPartition, RetTick, RetTruncatePartition)
//	uvarint  partition (RetKey, RetPartition, RetTruncatePartition)
//	string   key or prefix (RetKey, RetPrefix)
//	varint   max age, nanoseconds (0: none)
//	uvarint  max count (0: none)
//	uvarint  truncate-before key sequence (0: none), or the new low offset
//	uvarint  max bytes (RetPartition; 0: none)
//
// A setting with every limit 0 removes the rule it names.
const CmdRetention byte = 4

// Retention operation kinds.
const (
	RetKey       byte = 1 // the rule of one key of a partition
	RetPrefix    byte = 2 // the rule of every key that starts with a prefix (a category)
	RetPartition byte = 3 // the caps of a partition
	RetTick      byte = 4 // nothing: the entry only advances the shard's time
	// RetTruncatePartition raises a partition's low offset to Before:
	// records below it are gone (the scavenge proposes it before it
	// removes them, so every replica hides them at the same index).
	RetTruncatePartition byte = 5
)

// RetentionOp is one change of retention settings.
type RetentionOp struct {
	Kind      byte
	Partition core.Partition
	Key       string // the key (RetKey) or the prefix (RetPrefix)
	MaxAge    int64  // nanoseconds
	MaxCount  uint64
	Before    uint64
	MaxBytes  uint64
}

// Check validates an operation before it is proposed, as the state
// machine would: an entry that reaches raft must apply.
func (o *RetentionOp) Check(partitions int) error {
	switch o.Kind {
	case RetKey:
		if o.Key == "" {
			return fmt.Errorf("%w: retention of an empty key", core.ErrEmptyKey)
		}
	case RetPrefix, RetPartition, RetTick, RetTruncatePartition:
	default:
		return fmt.Errorf("%w: unknown retention operation %d", core.ErrCorrupt, o.Kind)
	}
	if len(o.Key) > core.MaxKeyBytes {
		return fmt.Errorf("%w: retention key or prefix of %d bytes, at most %d", core.ErrConfig, len(o.Key), core.MaxKeyBytes)
	}
	if o.MaxAge < 0 {
		return fmt.Errorf("%w: negative max age", core.ErrConfig)
	}
	if (o.Kind == RetKey || o.Kind == RetPartition || o.Kind == RetTruncatePartition) && (o.Partition < 0 || int(o.Partition) >= partitions) {
		return fmt.Errorf("%w: %d", core.ErrUnknownPartition, o.Partition)
	}
	if o.Kind == RetPartition && (o.MaxCount != 0 || o.Before != 0) {
		return fmt.Errorf("%w: a partition's retention takes a max age and a max size only", core.ErrConfig)
	}
	if o.Kind != RetPartition && o.MaxBytes != 0 {
		return fmt.Errorf("%w: a max size applies to a partition only", core.ErrConfig)
	}
	return nil
}

// EncodeRetentionOp appends the encoded operation to b.
func EncodeRetentionOp(b []byte, o *RetentionOp) []byte {
	b = append(b, o.Kind)
	b = binary.AppendUvarint(b, uint64(o.Partition))
	b = AppendString(b, o.Key)
	b = binary.AppendVarint(b, o.MaxAge)
	b = binary.AppendUvarint(b, o.MaxCount)
	b = binary.AppendUvarint(b, o.Before)
	return binary.AppendUvarint(b, o.MaxBytes)
}

// RetentionOp decodes an operation.
func (d *Decoder) RetentionOp() RetentionOp {
	o := RetentionOp{Kind: d.Byte()}
	p := d.Uvarint()
	if p > 1<<31 {
		d.Fail()
	}
	o.Partition = core.Partition(p)
	o.Key = d.Str()
	o.MaxAge = d.Varint()
	o.MaxCount = d.Uvarint()
	o.Before = d.Uvarint()
	o.MaxBytes = d.Uvarint()
	return o
}

// EncodeRetentionEntry returns the raft entry of op stamped t.
func EncodeRetentionEntry(t int64, op *RetentionOp) []byte {
	b := binary.AppendVarint([]byte{CmdRetention}, t)
	return EncodeRetentionOp(b, op)
}

// DecodeRetentionEntry decodes an entry of type CmdRetention.
func DecodeRetentionEntry(b []byte) (int64, RetentionOp, error) {
	d := Decoder{B: b}
	if c := d.Byte(); d.Err == nil && c != CmdRetention {
		return 0, RetentionOp{}, fmt.Errorf("%w: not a retention Entry", core.ErrCorrupt)
	}
	t := d.Varint()
	op := d.RetentionOp()
	return t, op, d.Finish()
}
