// Package esraftwatermill puts an esraft event store under watermill
// (github.com/ThreeDotsLabs/watermill): a message.Publisher that appends
// messages as events, and a message.Subscriber that delivers events as
// messages, alone or as a member of a consumer group kept in the log.
//
// # Topics, streams and messages
//
// A topic is an event type. Publish appends each message as an event whose
// type is the topic, to the stream PublisherConfig.Stream names (by default
// the topic itself, so a topic's messages keep one total order). Subscribe
// delivers the events of that type from every stream, so a watermill
// handler can also follow the events an aggregate wrote ("OrderPlaced").
//
// A message's UUID is kept in the event's header "watermill_uuid"; the event
// ID is derived from the topic and the UUID (UUIDv5), so a Publish retried
// after an error appends nothing twice (the store deduplicates by event ID),
// while the same message published to two topics is two events. Metadata
// becomes the event's headers; the metadata key
// "correlation_id" (watermill's middleware.CorrelationID) is the event's
// correlation ID.
//
// # Delivery
//
// At least once, in order per stream (per partition, in fact): a
// subscription sends a partition's next message only after the previous one
// was acknowledged. Nack sends the same message again after
// SubscriberConfig.NackDelay, as often as it is nacked: nothing is parked.
// A message's context is the Subscribe context, cancelled once the message
// is acked or nacked, or the subscriber closes.
//
// Without SubscriberConfig.ConsumerGroup, every Subscribe reads the topic
// from the beginning of the log and keeps no offsets. With it, the
// subscriptions of a group (on any nodes) share the log's partitions, each
// partition owned by one of them at a time; an acknowledged message's
// offset is committed to the log with the generation of the member's grant
// (a member that lost the partition cannot commit), so a new member of the
// group resumes where the group stopped. The log-side group is named
// "<ConsumerGroup>/<topic>": each topic has its own offsets.
package esraftwatermill
