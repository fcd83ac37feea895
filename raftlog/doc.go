// Package raftlog is a partitioned, Raft-replicated, durable log of records,
// embedded in the process that uses it: one node alone (Config with only
// Dir), or three or five voters that each run a Log on their own cluster
// address, plus any number of non-voting workers.
//
// # Records, partitions and shards
//
// A record has a key, a value, headers and a 16-byte ID. Keys route to one
// of Partitions partitions by a stable hash (Log.Partition); a key never
// moves while the partition count is unchanged. Within a partition records
// have dense offsets from 0; within a key, dense sequences from 1 (KeySeq).
// Partitions are hosted by Shards raft groups: partition p lives in shard
// p mod Shards, and each shard has its own leader. There is no order across
// partitions.
//
// # What an acknowledged append means
//
// Append returns without error only after the batch was committed by a
// quorum of voters (each fsynced it to its raft log) and applied to the
// leader's state: a crash of any minority of nodes at any instant loses
// none of it. The batch is atomic: all its records or none, at consecutive
// offsets and sequences. Appends to one key are applied in the order the
// shard's leader received them; conditional appends (ExpectKeySeq,
// ExpectKeyExists, ExpectKeyAbsent) are checked inside the replicated state
// machine, so two appends racing on one key cannot both pass.
//
// # Idempotency
//
// Every record has an ID (a time-ordered UUID if the caller sets none). An
// append whose IDs were all committed before, as one run of the same key,
// is not appended again: the original result comes back with Duplicate
// set. IDs are remembered for Config.IDRetention (24 h by default) of
// leader time, in replicated, durable state. So an error of unknown outcome
// (ErrUnknownOutcome, a timeout, a lost connection) is safe to retry with
// the same IDs within that window; Append itself retries across leader
// changes until its context ends.
//
// # Reads
//
// Read, ReadKey, KeySeq and KeyInfo read this node's replica and never
// wait for the network: they see every record this replica has applied,
// which may lag the leader. To read your own write on another node, pass
// the AppendResult's Position to WaitApplied there; to see every write
// acknowledged anywhere before a point in time, call ReadBarrier. Wait
// blocks until a partition holds an offset, woken by the apply path.
// Records hidden by DeleteKey or TruncateKey are never returned.
//
// # Consumer groups
//
// JoinGroup, Heartbeat, CommitOffsets, LeaveGroup, RetryParked and
// SkipParked keep consumer groups in the replicated state of shard 0:
// membership expires by leader time, each partition has at most one
// owner, moves are cooperative, and a commit must carry the generation of
// its grant, so a member that lost a partition can never commit to it
// again. A committed
// offset never moves back by a commit (ErrCommitBehind). JoinGroupAt
// creates a group at a StartPosition (earliest, latest, a time, offsets);
// ResetGroup and DeleteGroup act only on a group with no live member
// (ErrGroupActive); ForceResetGroup resets one with live members by
// fencing them out of it (they join again at a new generation).
//
// # Errors
//
// Errors wrap the sentinels (ErrNoLeader, ErrUnknownOutcome, ErrClosed,
// ErrConfig...) or are typed (*KeySeqError, *StaleGenerationError): use
// errors.Is and errors.As. No raft or bbolt type appears in the API.
//
// The design, the on-disk layout and the internal packages are described in
// DESIGN.md beside this package.
package raftlog
