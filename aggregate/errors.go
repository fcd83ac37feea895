package aggregate

import (
	"errors"
	"fmt"

	"github.com/esraft/esraft/eventstore"
)

// Errors returned by the package. Errors that carry data are typed
// (NotFoundError, ConflictError, UnknownEventError, VersionError); each matches its
// sentinel with errors.Is.
var (
	// ErrNotFound matches every *NotFoundError: the aggregate has no
	// events, or its stream was deleted.
	ErrNotFound = errors.New("aggregate: not found")
	// ErrAlreadyExists: Create of an aggregate whose stream has events.
	ErrAlreadyExists = errors.New("aggregate: already exists")
	// ErrConflict matches every *ConflictError: another writer appended to
	// the aggregate between its load and the save of the new events.
	ErrConflict = errors.New("aggregate: concurrent modification")
	// ErrUnknownEvent matches every *UnknownEventError.
	ErrUnknownEvent = errors.New("aggregate: unknown event type")
	// ErrUnregisteredEvent: a command decided an event whose Go type is
	// not registered; nothing was appended.
	ErrUnregisteredEvent = errors.New("aggregate: unregistered event type")
	// ErrUndecodable: a stored event could not be decoded or upcast into
	// its registered Go type.
	ErrUndecodable = errors.New("aggregate: undecodable event")
	// ErrNoHandler: an event of the stream is registered but the aggregate
	// type has no On handler for it.
	ErrNoHandler = errors.New("aggregate: no handler for event")
	// ErrHistoryTruncated: events the aggregate needs are no longer
	// readable and no snapshot covers them: they were truncated from its
	// stream, or the stream was deleted and recreated (eventstore.Recreate),
	// which the repository does not support.
	ErrHistoryTruncated = errors.New("aggregate: history truncated")
	// ErrNoEvents: Create with a command that decided no events.
	ErrNoEvents = errors.New("aggregate: create decided no events")
	// ErrEmptyID: an empty aggregate ID.
	ErrEmptyID = errors.New("aggregate: empty id")
	// ErrNoSuchVersion matches every *VersionError: LoadAt of a version
	// beyond the aggregate's last.
	ErrNoSuchVersion = errors.New("aggregate: no such version")
)

// NotFoundError reports a Load, Execute or Update of an aggregate that
// has no events (or whose stream was deleted).
type NotFoundError struct {
	Type string // the aggregate type's category, "account"
	ID   string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("aggregate: %s %q not found", e.Type, e.ID)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// ConflictError reports that the aggregate's stream moved on between the
// load and the save: the command's events were not appended. Update
// retries these; Execute returns them. It unwraps to the store's
// *eventstore.WrongVersionError.
type ConflictError struct {
	Type, ID string
	// Loaded is the version the command decided on; Actual is the
	// stream's version when the save was refused.
	Loaded, Actual uint64
	// Attempts is how many times the command ran (Update), 1 for Execute.
	Attempts int
	err      *eventstore.WrongVersionError
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("aggregate: %s %q changed concurrently: loaded at version %d, now at %d", e.Type, e.ID, e.Loaded, e.Actual)
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (gave up after %d attempts)", e.Attempts)
	}
	return s
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap returns the store's *eventstore.WrongVersionError.
func (e *ConflictError) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
}

// UnknownEventError reports a stored event whose type name is neither
// registered nor upcast to a registered type.
type UnknownEventError struct {
	Type     string // the stored event type name
	Revision int
	Stream   string
	Version  uint64
}

func (e *UnknownEventError) Error() string {
	return fmt.Sprintf("aggregate: unknown event type %q (revision %d) at %s version %d", e.Type, e.Revision, e.Stream, e.Version)
}

// Is makes errors.Is(err, ErrUnknownEvent) true.
func (e *UnknownEventError) Is(target error) bool { return target == ErrUnknownEvent }
