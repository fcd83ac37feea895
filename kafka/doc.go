// Package kafka serves Kafka's wire protocol on top of an event store, so
// Kafka clients (kcat, franz-go, kafkajs, ...) produce to and consume from
// esraft's replicated log.
//
// A Kafka topic partition is a stream of the store with a reserved name
// ("$kafka-<topic>-<partition>"); the stream's versions are the partition's
// offsets (offset = version - 1), dense from 0 and the same on every node.
// Produce is one append of the batch's records (key, headers, value and the
// producer's timestamp kept in the event's data), acknowledged as the
// store acknowledges an append: committed by a quorum, fsynced, applied.
// Fetch reads the stream from an offset, waiting on the log's apply path
// until MinBytes or MaxWait. Topics are recorded in the replicated stream
// "$kafka-topics". The store's own events are a read-only topic
// ("esraft.events": partition = the log's partition, offset = the log's
// offset, key = stream, headers = the event's type and metadata).
//
// Idempotent producers get their producer IDs from the replicated stream
// "$kafka-producers" (the version of the append is the ID), and each record
// gets an event ID derived from (producer ID, epoch, topic, partition,
// sequence): a batch retried after a leader change or a lost answer carries
// the same IDs, and the log's state machine, which deduplicates appends by
// ID, writes it once and answers with the original offsets.
//
// Consumer groups use the classic protocol, coordinated in memory by one
// node, the one leading the log's first shard (each node records its
// listener in "$kafka-brokers", so FindCoordinator on any node names it);
// committed offsets are stored in the replicated stream
// "$kafka-offsets-<group>", each commit an append conditioned on the
// stream's version, so two coordinators never overwrite each other's
// commits. A topic's retention.ms truncates its streams. See DESIGN.md in
// this directory for what is served and its bounds.
package kafka
