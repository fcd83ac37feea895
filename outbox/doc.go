// Package outbox lets a message handler change its SQLite state and send
// messages to the outside world without losing either and without a
// reprocessed event producing a new message.
//
// A handler calls Enqueue in the same SQLite transaction as its state
// change: the outgoing messages commit or roll back with it. A Relay reads
// the outbox table and hands each message to a Publisher (the log, through
// LogPublisher; an HTTP endpoint, through Webhook; or your own), retrying
// with exponential backoff and jitter, and parks a message that fails
// MaxAttempts times (ListParked, Retry, Discard).
//
// # Guarantees
//
//   - Exactly-once effect inside the handler's SQLite database, together
//     with package dedup (or a projection checkpoint kept in the same
//     transaction): the state change and its outgoing messages are written
//     once per source event, or not at all.
//   - At-least-once delivery with stable IDs towards the outside world: a
//     committed message is published until a publish succeeds, across
//     crashes and restarts of the relay; a crash between a successful
//     publish and recording it (or a lost response) publishes it again,
//     with the same ID. Receivers deduplicate by Message.ID (the log does
//     so itself for 24 hours by default; a webhook receives it in the
//     Idempotency-Key header).
//   - Stable IDs: the n-th message Enqueue writes for a source event and a
//     handler has the ID MessageID(source, handler, n), a UUIDv5. Handling
//     the same event again (a redelivery, a replay, another node running
//     the same handler) yields the same IDs, and Enqueue drops a message
//     whose ID is pending or was delivered within Config.DoneRetention, so
//     reprocessing never creates a new message; a relay per node appending
//     to the log is safe, since the log drops the repeated IDs.
//   - Order per key: messages with the same Key are published in the order
//     they were enqueued (committed), one at a time: a message is published
//     only after every earlier message of its key was published (or
//     discarded). A message that is retrying or parked holds back the later
//     messages of its key, not other keys; Discard a parked message to let
//     its key move on. After a crash the relay may publish again the
//     messages of its last round, earlier ones included: a receiver that
//     ignores IDs it has seen sees every key in order.
//
// Not guaranteed: order across keys; a message being published once; a
// receiver deduplicating beyond its own window (see DoneRetention and the
// log's ID retention).
//
// Run one Relay per database: two relays on one outbox publish messages
// twice (with the same IDs), which is safe but wasteful.
package outbox
