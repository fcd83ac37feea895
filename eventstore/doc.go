// Package eventstore stores streams of events on esraft's replicated,
// partitioned log (package raftlog).
//
// A stream ("order-42") is an ordered sequence of events; its version is
// the version of its last event, from 1 (0 for a stream with no events).
// Every stream lives in one partition, chosen by a stable hash of its name;
// a partition orders the events of many streams by offset.
//
// Open with only a directory gives the embedded single-node default; the
// same call with Node and Peers (or Join) forms or joins a cluster of
// three or five voters, plus any number of non-voting workers. The Store
// API is the same either way, and any node accepts any call. A process
// that should hold no replica opens the same Store as a thin client of a
// cluster's nodes (package client): a Store runs on a Log, embedded
// (*raftlog.Log) or remote (*raftlog.Remote), with the same guarantees;
// over a remote log, "the node" below is the node the client is connected
// to, and its reads never go back past what the client has seen.
//
// # Guarantees
//
//   - Durability on acknowledge: Append returns only after the events are
//     committed by a quorum of voters (each fsynced) and applied. An
//     acknowledged event survives the crash of any minority of nodes, and
//     of every node at once.
//   - Per-stream order: a stream's versions are dense from 1, in append
//     order, the same on every node. With an expected version (Exact,
//     NoStream, StreamExists) the check runs inside the replicated state
//     machine: of two appends racing on one version exactly one wins; the
//     other gets a *WrongVersionError carrying the actual version.
//   - Per-partition order: offsets are dense from 0 per partition and
//     every node holds the same event at the same offset. There is no
//     global order across partitions; a subscription interleaves them.
//   - Idempotency window: appends are idempotent by event ID. A retry
//     whose event IDs were all appended returns the original result
//     (Duplicate set) and appends nothing, from any node, across leader
//     changes and restarts, for as long as the log's ID retention (24 hours
//     by default, raftlog.Config.IDRetention; set it through LogConfig).
//     A retry after ErrUnknownOutcome or ErrUnavailable with the same IDs
//     is therefore always safe inside the window.
//   - Reads are served by the node's own replica and see only committed
//     events. Append waits, within its ctx, until the node that took it
//     has applied the append, so reads there see it; if ctx ends first
//     (the node cut off from the leader after the commit) it still reports
//     the committed result, which is durable. Any node sees an append once
//     it has applied its Position (Sync waits for that), and Barrier makes
//     a node's reads include every write acknowledged before it.
//   - Subscriptions deliver each partition's events in offset order, from
//     a checkpoint or from now, catching up on history and then following
//     new events as they apply, with no gap and no duplicate in between.
//     Delivery is at-least-once across restarts of the subscriber: resume
//     from the Checkpoint stored with your own state.
//   - Deletion and truncation are replicated: a deleted or truncated
//     event disappears from every read on a node as soon as the node
//     applies the operation, and is erased from the node's state file
//     soon after.
//   - Validation: a Validator set with SetValidator (package schema's
//     registry) checks every append on the node that receives it, before
//     anything is proposed; a refused append writes nothing.
//   - Time: event times never decrease along a partition (and so along a
//     stream), so OffsetAt and SubscribeOptions.FromTime find where a
//     time starts by a binary search.
//   - Crypto-shredding (opt-in, Encrypt): the data of the events of an
//     encrypted stream is stored sealed under its subject's key; Shred
//     deletes the key, and every node reads the subject's events as
//     Unreadable (a *ShreddedError) once it applies the shred. Backups
//     (Backup) hold no key. SECURITY.md says what holds and what does not.
//
// Limits: an event as stored (data, type and metadata, with the two-byte
// names of the store's own fields) is at most MaxEventBytes (1 MiB by
// default), an append holds at most MaxAppendEvents events (1,000) and
// 8 MiB, a stream name at most 4,096 bytes. An encrypted event takes 28
// bytes more (nonce and tag) and a header naming its key (about the
// subject's length). The log enforces the limits,
// which are its own (raftlog.Config's MaxRecordBytes, MaxBatchRecords,
// MaxBatchBytes); the store checks only what is its own (stream names,
// event types, header names). Bad input is rejected before anything is
// written, with the errors listed in this package.
package eventstore
