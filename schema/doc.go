// Package schema is a schema registry kept in the event store's own
// replicated log: numbered JSON Schema versions per subject (an event
// type), a compatibility mode per subject with Confluent Schema Registry's
// meanings, and validation of appends against them.
//
// # Guarantees
//
//   - The registry's state is a stream of events in the system stream
//     "$schemas": registrations, compatibility settings and validation
//     modes. Every node reads that stream into an in-memory view, so the
//     registry survives restarts and snapshot installs like any event, and
//     is the same on every node once it has applied the same events. There
//     is no extra service and nothing of the log's storage is changed.
//   - A registration is appended with the stream version the view was at
//     when compatibility was checked (eventstore.Exact): of two concurrent
//     registrations, one wins and the other is checked again against the
//     winner, so a subject never holds two versions that were each checked
//     only against older ones.
//   - Registering a version checks it against the earlier ones under the
//     subject's mode (BACKWARD, FORWARD, FULL, their _TRANSITIVE forms, or
//     NONE; default BACKWARD, as Confluent's) and refuses a breaking change
//     with an *IncompatibleError listing every incompatibility and its
//     JSON path in the schema. Registering a schema equal to an existing
//     version of the subject returns that version and appends nothing.
//   - Once Attach is called, every append to the store, on whatever node
//     receives it and before it is proposed, has its events validated
//     against the latest version of their type, or the version declared in
//     Metadata.SchemaVersion; an invalid event fails the whole append with
//     an *InvalidEventError naming the type, version and the path in the
//     event, and nothing of the append is written. Validated events carry
//     the version they were validated against in Metadata.SchemaVersion.
//     The mode is chosen per stream category (see ValidationMode).
//     Compiled schemas are cached in the view: an append never compiles.
//   - Validation uses this node's view, which follows the log: a version
//     registered on another node is used here once this node has applied
//     it (usually within milliseconds). A type unknown to the view is
//     looked up again after a read barrier before an append is refused for
//     it, so a type registered anywhere before the append is never refused
//     as unregistered.
//
// # Compatibility of JSON Schemas
//
// "Schema B can read data written with schema A" is checked structurally:
// every document A accepts must be accepted by B. BACKWARD checks that
// the new schema reads data of the previous one, FORWARD that the previous
// one reads data of the new, FULL both; the _TRANSITIVE forms check
// against every earlier version instead of the latest. The content model
// matters as in Confluent's rules: in an open content model (no
// "additionalProperties", or true) old data may hold any property, so a
// property added with a constraint is a breaking change for BACKWARD; in a
// closed one ("additionalProperties": false) adding an optional property
// is safe and removing one breaks; a partially open model (an
// "additionalProperties" schema) needs added and removed properties to be
// compatible with that schema. Narrowed types, enums, bounds and lengths,
// added required properties and added or changed patterns are breaking;
// widening them is not. Keywords the checker does not model (if/then/else,
// patternProperties, dependentSchemas, ...) are compatible only when
// unchanged. "format" is an annotation and is not asserted.
package schema
