package raftlog

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Append appends records under key, in order, to the key's partition (or
// the one chosen with ToPartition), and returns once the batch is committed
// by a quorum and applied. Any node accepts appends: they are forwarded to
// the shard's leader, retried across leader changes with the same record
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
	return l.run(ctx, l.request(key, nil, wire.ReqDelete, opts))
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
	req := l.request(key, nil, wire.ReqTruncate, opts)
	req.Before = before
	return l.run(ctx, req)
}

// request builds an append request from the options.
func (l *Log) request(key string, recs []NewRecord, op uint64, opts []AppendOption) wire.Request {
	return buildRequest(key, recs, op, opts, l.Partition)
}

// buildRequest builds an append request from the options; partition
// routes the key when no option names a partition.
func buildRequest(key string, recs []NewRecord, op uint64, opts []AppendOption, partition func(string) Partition) wire.Request {
	var o appendOptions
	if len(opts) > 0 { // options escape: allocate only when there are some
		po := new(appendOptions)
		for _, opt := range opts {
			opt(po)
		}
		o = *po
	}
	req := wire.Request{Key: key, Records: recs, Flags: o.flags | op, Expected: o.expected}
	if o.hasPartition {
		req.Partition = o.partition
	} else {
		req.Partition = partition(key)
	}
	return req
}

// run validates req and runs it on its shard's leader.
func (l *Log) run(ctx context.Context, req wire.Request) (AppendResult, error) {
	if l.isClosed() {
		return AppendResult{}, ErrClosed
	}
	if err := l.validate(&req); err != nil {
		return AppendResult{}, err
	}
	s, _ := l.shardOf(req.Partition)
	start := time.Now()
	res, err := l.router.Append(ctx, s.Shard, wire.EncodeRequest(make([]byte, 0, wire.RequestSize(&req)), &req))
	l.stats.recordAppend(&req, start, err)
	return res, err
}

// validate checks an append against the limits and gives records without
// an ID a new one (in a copy: the caller's slice is not modified).
func (l *Log) validate(r *wire.Request) error {
	switch {
	case r.Key == "":
		return ErrEmptyKey
	case len(r.Key) > core.MaxKeyBytes:
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrRecordTooLarge, len(r.Key), core.MaxKeyBytes)
	case r.IsKeyOp():
		if _, err := l.shardOf(r.Partition); err != nil {
			return err
		}
		return nil
	case len(r.Records) == 0:
		return ErrEmptyBatch
	case len(r.Records) > l.cfg.MaxBatchRecords:
		return fmt.Errorf("%w: %d records, limit %d", ErrBatchTooLarge, len(r.Records), l.cfg.MaxBatchRecords)
	}
	if _, err := l.shardOf(r.Partition); err != nil {
		return err
	}
	total, missing := 0, 0
	supplied := false // IDs made here are unique: only the caller's can repeat
	for i := range r.Records {
		rec := &r.Records[i]
		size := recordSize(rec)
		if size > l.cfg.MaxRecordBytes {
			return fmt.Errorf("%w: record %d is %d bytes, limit %d", ErrRecordTooLarge, i, size, l.cfg.MaxRecordBytes)
		}
		total += size
		if rec.ID != uuid.Nil {
			supplied = true
		} else {
			missing++
		}
	}
	if missing > 0 {
		r.Records = fillIDs(r.Records, missing)
	}
	if total > l.cfg.MaxBatchBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBatchTooLarge, total, l.cfg.MaxBatchBytes)
	}
	if supplied {
		return checkUniqueIDs(r.Records)
	}
	return nil
}

// checkUniqueIDs returns ErrDuplicateID if two of recs share an ID.
func checkUniqueIDs(recs []NewRecord) error {
	var seen map[uuid.UUID]struct{} // for large batches; small ones compare pairwise
	if len(recs) > 16 {
		seen = make(map[uuid.UUID]struct{}, len(recs))
	}
	for i := range recs {
		rec := &recs[i]
		if seen != nil {
			if _, dup := seen[rec.ID]; dup {
				return fmt.Errorf("%w: %s", ErrDuplicateID, rec.ID)
			}
			seen[rec.ID] = struct{}{}
			continue
		}
		for j := range i {
			if recs[j].ID == rec.ID {
				return fmt.Errorf("%w: %s", ErrDuplicateID, rec.ID)
			}
		}
	}
	return nil
}

// recordSize is the size of rec that the limits count: its value and
// headers.
func recordSize(rec *NewRecord) int {
	size := len(rec.Value)
	for _, h := range rec.Headers {
		size += len(h.Key) + len(h.Value)
	}
	return size
}

// fillIDs returns a copy of records (the caller's slice is left alone)
// whose missing IDs, missing of them, are new UUIDv7s.
func fillIDs(records []NewRecord, missing int) []NewRecord {
	records = slices.Clone(records)
	ids := make([]uuid.UUID, missing)
	if missing == len(records) {
		core.NewIDRun(ids) // kept as one entry in the ID index
	} else {
		core.NewIDs(ids)
	}
	for i := range records {
		if records[i].ID == uuid.Nil {
			records[i].ID, ids = ids[0], ids[1:]
		}
	}
	return records
}
