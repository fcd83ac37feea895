// Package aggregate models event-sourced aggregates over an
// eventstore.Store: typed state, typed events, and a repository that loads
// state from a snapshot plus the events after it, runs commands and saves
// their events with optimistic concurrency.
//
// An aggregate type is a plain struct S, the events that change it
// (registered once with On, which maps an event name to a Go type and
// gives the handler that applies it) and commands: functions from the
// current state to new events, or to the domain's own error.
//
//	var accounts = aggregate.NewType[Account]("account", aggregate.SnapshotEvery(100))
//	aggregate.On(accounts, "Deposited", func(a *Account, e Deposited) { a.Balance += e.Amount })
//	repo := aggregate.NewRepository(store, accounts)
//	acct, err := repo.Update(ctx, "42", func(a Account) ([]any, error) { return a.Deposit(10) })
//
// # Guarantees
//
//   - Events of aggregate id live in stream category-id ("account-42"),
//     one stream per aggregate, in the order they were decided.
//   - A command's events are appended atomically, all or none, and only if
//     the stream is still at the version the command's state was loaded
//     at (eventstore.Exact). Otherwise nothing is written and Execute
//     returns a *ConflictError (errors.Is ErrConflict). Update re-runs the
//     command on freshly loaded state, with jittered backoff, up to the
//     repository's RetryPolicy.Attempts (default 10) times in all.
//   - A command's own error is returned unchanged, never wrapped and
//     never retried, so errors.Is(err, ErrInsufficientFunds) works and a
//     domain refusal is never confused with a conflict.
//   - Create appends only to a stream without events (ErrAlreadyExists
//     otherwise); Load, Execute and Update of an aggregate without events,
//     or whose stream was deleted, return a *NotFoundError (ErrNotFound).
//   - Loads read this node's replica of the store: after a write made on
//     another node, a Load may not see it yet. Execute and Update stay
//     correct regardless, since a stale state's save is refused as a
//     conflict; Update retries until the replica catches up or its
//     attempts run out.
//   - Events are stamped with the correlation and causation IDs carried by
//     the command's context (WithCorrelationID, WithCausationID,
//     CausedBy).
//
// # Events and their evolution
//
// Event payloads are encoded with the registry's Codec (JSON by default).
// Each event type has a revision (default 1, raised with Revision); events
// of a revision other than 1 carry it in the metadata header
// "esraft.revision". On read, an event of an older revision, or of an
// older name, goes through the upcasters registered with Upcast, chained
// revision by revision, until it is a registered Go type. A stored event
// whose name is neither registered nor upcast is a *UnknownEventError
// naming it (errors.Is ErrUnknownEvent); the load fails rather than
// silently skipping history.
//
// # Snapshots
//
// With SnapshotEvery(n), a save that leaves the aggregate n or more events
// past the snapshot it was loaded from (or past the beginning) stores a
// snapshot of the state: an event of type "snapshot" in the stream
// "$snapshot-" + stream, which is replicated like any event and so is read
// by every node; older snapshots of the aggregate are then truncated.
// Snapshots are encoded with the registry's codec (so, with JSON, only
// exported fields of S are kept) and tagged with SnapshotRevision. A load
// uses the latest snapshot only if its revision is the type's current
// one and it decodes; otherwise the aggregate is rebuilt from all its
// events, and the next save snapshots it anew. Snapshots are an
// optimization only: a snapshot that cannot be written or read is
// reported to the OnSnapshotError function and never fails a command
// whose events were committed, nor a load.
//
// # Temporal loads
//
// LoadAt(id, v) returns the state after the aggregate's first v events;
// LoadAsOf(id, t) the state with every event stamped at or before t.
// Event times never decrease along a stream (the log's leader stamps
// them, made monotonic per shard), so LoadAsOf finds its version by a
// binary search over the stream. Both start from the latest snapshot only
// if it is at or below the version sought, never from one beyond it; as
// only the latest snapshot is kept, an older version is rebuilt from the
// events. Events truncated from the stream make an older version
// unreachable (ErrHistoryTruncated).
//
// # Shredded events
//
// With crypto-shredding (eventstore.Encrypt; eventstore.SubjectPerStream
// gives an aggregate's stream and its snapshots one key), a load skips
// events whose key was shredded (eventstore.Event.Unreadable): their
// versions count, their effects are gone, so a shredded aggregate loads
// at its version with the state its readable events make (the zero state
// when every event was shredded), and its snapshot is not used. A
// command's new events on a shredded subject fail with the store's
// *eventstore.ShreddedError.
package aggregate
