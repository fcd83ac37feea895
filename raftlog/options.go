package raftlog

import "github.com/esraft/esraft/raftlog/internal/wire"

// AppendOption adjusts one Append call.
type AppendOption func(*appendOptions)

type appendOptions struct {
	partition    Partition
	hasPartition bool
	expected     uint64
	flags        uint64 // wire.ReqExpected, ReqExists, ReqAbsent, ReqRecreate
}

// ToPartition appends to partition p instead of the partition the key
// routes to. Key sequences are kept per partition and key.
func ToPartition(p Partition) AppendOption {
	return func(o *appendOptions) { o.partition, o.hasPartition = p, true }
}

// ExpectKeySeq makes the append conditional: it succeeds only if the key's
// current sequence (the sequence of its last record, 0 for a new key; a
// deleted or truncated key keeps its sequence) equals seq. The check runs
// inside the replicated state machine, so two appends racing on one key
// cannot both pass it. The last condition option given wins.
func ExpectKeySeq(seq uint64) AppendOption {
	return func(o *appendOptions) { o.expected, o.flags = seq, o.flags&wire.ReqRecreate|wire.ReqExpected }
}

// ExpectKeyExists makes the append conditional on the key having records
// and not being deleted.
func ExpectKeyExists() AppendOption {
	return func(o *appendOptions) { o.flags = o.flags&wire.ReqRecreate | wire.ReqExists }
}

// ExpectKeyAbsent makes the append conditional on the key having no
// records, or being deleted (then Recreate is needed as well).
func ExpectKeyAbsent() AppendOption {
	return func(o *appendOptions) { o.flags = o.flags&wire.ReqRecreate | wire.ReqAbsent }
}

// Recreate lets an append to a soft-deleted key succeed: the key is no
// longer deleted, its sequence goes on from where it was, and the records
// from before the deletion stay hidden. Without it such an append fails
// with ErrKeyDeleted.
func Recreate() AppendOption {
	return func(o *appendOptions) { o.flags |= wire.ReqRecreate }
}

// ReadOptions bounds a read. Zero values take the log's defaults. A read
// returns at least one record when one exists, even if it alone exceeds
// MaxBytes.
type ReadOptions struct {
	MaxRecords int
	MaxBytes   int
}
