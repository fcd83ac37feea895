// Package dedup makes at-least-once message handlers idempotent with a
// deduplication table kept in the handler's own SQLite database.
//
// A log, a consumer group or a webhook sender delivers a message at least
// once: after a crash, a rebalance or a lost acknowledgement the same
// message comes again. Wrap marks each message as handled, keyed by
// (consumer, message ID), in the same transaction as the handler's own
// writes, and skips a message whose mark is already there.
//
// # Guarantees
//
//   - Exactly-once effect inside the handler's SQLite database: the mark
//     and the handler's writes commit or roll back together, so a message
//     redelivered while its mark is kept changes the database once, however
//     often it is delivered and wherever the process crashed.
//   - Nothing beyond that database: a handler that calls an API or sends
//     mail from inside the transaction is back to at-least-once (the call
//     may happen, then the transaction roll back). Write outgoing messages
//     to an outbox in the same transaction instead (package outbox), which
//     delivers them at least once with stable IDs.
//   - Marks are kept only as long as the retention says (Retention, Prune,
//     Pruner). A message redelivered after its mark was pruned is handled
//     again.
//
// # Sizing the retention
//
// The window that matters is the longest time between the first delivery
// of a message and its last possible redelivery: for a consumer group, the
// time an offset may stay uncommitted plus a rebalance; for an external
// sender, its documented retry horizon (often 24 hours to 3 days). Choose
//
//   - Retention.MaxAge longer than that window, with a margin for clock
//     steps and for a consumer that was down (its redeliveries come late);
//   - Retention.MaxPerConsumer at least the peak message rate of one
//     consumer times the window, or 0 for no count limit. The count limit
//     caps the table when the rate spikes; when it bites, marks younger than
//     MaxAge are dropped, which shortens the window. Size it so it only
//     bites in an emergency.
//
// The table then holds at most about MaxPerConsumer rows per consumer plus
// what arrives between two prunes, and about rate x MaxAge rows in steady
// state. A mark with a UUID message ID takes about 150 bytes on disk
// (table and indexes), so a million kept marks are about 146 MB; the
// lookup Wrap makes costs about 10 microseconds and hardly grows with the
// table. BENCHMARKS.md ("## dedup") has the measured figures and the
// command.
//
// # Use
//
// Add Schema to your database (Migrate, or put Schema in your own
// migrations), wrap the handler, and run a Pruner beside it. The wrapped
// handler runs inside your transaction; return its error so that the
// caller rolls the transaction back, mark included.
package dedup
