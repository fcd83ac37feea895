package eventstore

import (
	"errors"
	"fmt"
)

// Errors returned by the store. Errors that carry data are typed
// (WrongVersionError); the others are sentinels, wrapped with detail, for
// errors.Is. An error translated from the log's (package raftlog) wraps
// the log's error too, so errors.Is and errors.As reach both: an
// oversized event matches ErrEventTooLarge and raftlog.ErrRecordTooLarge.
var (
	// ErrEmptyStream: a stream name is empty.
	ErrEmptyStream = errors.New("eventstore: empty stream name")
	// ErrStreamNameTooLong: a stream name exceeds 4,096 bytes.
	ErrStreamNameTooLong = errors.New("eventstore: stream name too long")
	// ErrEmptyEventType: an event without a type.
	ErrEmptyEventType = errors.New("eventstore: empty event type")
	// ErrReservedHeader: a metadata header whose name starts with '$'
	// (reserved for the store's own fields) or is empty.
	ErrReservedHeader = errors.New("eventstore: reserved or empty header name")
	// ErrEventTooLarge: an event as stored exceeds MaxEventBytes (the
	// log's MaxRecordBytes; see MaxEventBytes for what counts). It wraps
	// raftlog.ErrRecordTooLarge, whose message names the event by its
	// index in the append ("record 2") and gives its size and the limit.
	ErrEventTooLarge = errors.New("eventstore: event too large")
	// ErrTooManyEvents: more events in one append than MaxAppendEvents
	// (the log's MaxBatchRecords). It wraps raftlog.ErrBatchTooLarge. A
	// store from New reports ErrAppendTooLarge instead.
	ErrTooManyEvents = errors.New("eventstore: too many events in one append")
	// ErrAppendTooLarge: the events of one append exceed the log's batch
	// byte limit (MaxBatchBytes) together; over a log from New, or its
	// record limit (MaxBatchRecords). It wraps raftlog.ErrBatchTooLarge.
	ErrAppendTooLarge = errors.New("eventstore: append too large")
	// ErrNoEvents: an append with no events. It wraps
	// raftlog.ErrEmptyBatch.
	ErrNoEvents = errors.New("eventstore: no events to append")
	// ErrDuplicateEventID: the same event ID twice in one append. It
	// wraps raftlog.ErrDuplicateID.
	ErrDuplicateEventID = errors.New("eventstore: duplicate event id in append")
	// ErrEventIDConflict: some event IDs of the append were appended
	// before and others were not, or they were appended to another stream.
	ErrEventIDConflict = errors.New("eventstore: event ids conflict with an earlier append")
	// ErrStreamDeleted: the stream was soft-deleted; appending to it needs
	// the Recreate option.
	ErrStreamDeleted = errors.New("eventstore: stream deleted")
	// ErrWrongVersion matches every *WrongVersionError with errors.Is.
	ErrWrongVersion = errors.New("eventstore: wrong expected version")
	// ErrUnknownPartition: a partition outside 0..Partitions()-1.
	ErrUnknownPartition = errors.New("eventstore: unknown partition")
	// ErrInvalidOptions: options that contradict each other (a
	// subscription FromNow and FromTime).
	ErrInvalidOptions = errors.New("eventstore: invalid options")
	// ErrUnknownOutcome: the append may or may not have been committed
	// (no leader was reachable before the context ended, after the append
	// had been handed to one). Retrying with the same event IDs is safe.
	ErrUnknownOutcome = errors.New("eventstore: outcome unknown")
	// ErrUnavailable: no leader could be reached before the context ended;
	// nothing was appended.
	ErrUnavailable = errors.New("eventstore: no leader reachable")
	// ErrShredded matches every *ShreddedError: an event's subject key
	// was shredded (Encrypt, Shred).
	ErrShredded = errors.New("eventstore: shredded")
	// ErrNoReplica: an operation that needs this node's replica (Backup)
	// on a store over a thin client.
	ErrNoReplica = errors.New("eventstore: no replica on this node")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("eventstore: closed")
	// ErrUnsupported: the store's log does not offer the call (retention
	// settings through a thin client). It wraps errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("eventstore: %w", errors.ErrUnsupported)
	// ErrInvalidRetention: a retention setting with a negative limit, or
	// more rules than the log keeps. It wraps raftlog.ErrConfig.
	ErrInvalidRetention = errors.New("eventstore: invalid retention setting")
)

// WrongVersionError reports an append, delete or truncate whose expected
// version did not hold. Nothing was written. It carries everything a
// caller needs in the store's terms; it also unwraps to the log's
// *raftlog.KeySeqError it was translated from (with the partition), like
// every store error that comes from the log.
type WrongVersionError struct {
	Stream   string
	Expected ExpectedVersion
	// Actual is the stream's current version (0 if it has no events; a
	// deleted stream keeps its last version).
	Actual uint64
	// Deleted reports that the stream is soft-deleted.
	Deleted bool

	cause error // the log's error, a *raftlog.KeySeqError
}

func (e *WrongVersionError) Error() string {
	state := fmt.Sprintf("is at version %d", e.Actual)
	if e.Deleted {
		state = fmt.Sprintf("is deleted (at version %d)", e.Actual)
	}
	return fmt.Sprintf("eventstore: stream %q %s, expected %s", e.Stream, state, e.Expected)
}

// Is makes errors.Is(err, ErrWrongVersion) true.
func (e *WrongVersionError) Is(target error) bool { return target == ErrWrongVersion }

// Unwrap returns the log's error (a *raftlog.KeySeqError), or nil for an
// error not made by the store.
func (e *WrongVersionError) Unwrap() error { return e.cause }
