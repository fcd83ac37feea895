// Package faulttest is esraft's fault-injection suite (issue #8): it runs
// a 3-node cluster as separate processes (systemtest/faultnode) on
// 127.0.0.1, drives appends and reads through their HTTP APIs while a
// seeded nemesis kills, pauses and partitions them, and checks the history
// and every node's final log for what Jepsen found in Kafka, Redpanda and
// NATS JetStream: lost acknowledged appends, duplicates, offsets with gaps
// or going backwards, versions not dense, replicas that differ, reads of
// events later lost, and, for a consumer group run in every node, events
// never handled and commits of a stale generation accepted.
//
// Pieces:
//
//   - Proxy: a TCP proxy in front of each node's cluster address (nodes
//     advertise it); nodes dial from distinct loopback IPs, so it can drop
//     or blackhole the link between any pair, open connections included.
//   - Cluster: starts node processes, kills (SIGKILL), pauses (SIGSTOP)
//     and resumes them by process ID.
//   - appenders: workers appending with exact expected versions to streams
//     they own and to shared "hot" streams, retrying indeterminate
//     attempts with the same event IDs on another node.
//   - readers and monitor: partition tailers and stream readers that check
//     every read, and a status poller that checks terms, commit indexes
//     and heads never go backwards and that one term has one leader.
//   - ConsumerGroupWorkload: a member of one consumer group in every node
//     (projection.Group) recording every grant, event handled and commit
//     attempt to a file that survives SIGKILL; checked against the final
//     log once the group has committed every partition to its end.
//   - nemesis: one fault at a time, drawn from a seeded generator and
//     logged (nemesis.log in the run's directory), healed, then awaited.
//     Besides process and network faults it damages a stopped node's
//     files (disk.go: flipped bytes in old and new raft log regions and in
//     state files, truncation), fills a node's disk (a tmpfs of its own,
//     mounted when run as root) and wipes a node as issue #16's first
//     scenario did; a damaged node that refuses to start is wiped and
//     restarted with its original command, the documented recovery.
//   - linearizability: appends and reads after a read barrier on other
//     nodes, checked per stream with porcupine (linear.go); stale reads
//     are counted.
//   - Check: the report; Report.Violations lists every safety figure that
//     is not zero.
//
// The test TestFaultInjection runs a short mode by default (about two
// minutes; skipped with -short) and a long one with -fault.duration; see
// RELIABILITY.md at the repository root for figures and commands.
package faulttest
