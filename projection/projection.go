// Package projection runs event handlers over the log: local projections
// that materialize every partition into a SQLite read model on every node,
// and group handlers that share the partitions among the members of a
// consumer group on any number of nodes.
//
// # One handler, two runners
//
// A Handler gets each event with the runner's SQLite write transaction:
//
//	func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error
//
// Local (NewLocal) runs on every node and handles every partition into the
// node's own read model (a ReadModel: package projection/sqlite opens a
// SQLite one; this package links no database driver). The checkpoint is written in the same
// transaction as the handler's changes: the read model never applies an
// event twice nor skips one, across crashes (exactly-once effect). A
// rebuild replays history into a new database and switches to it
// atomically once it has caught up; reads are served by the old one until
// then.
//
// Group (NewGroup) is a member of a consumer group kept in the log: each
// partition is processed by one member at a time, in order, one goroutine
// per owned partition; members join and leave at any time and a member
// that stops heartbeating is replaced after its session timeout. Offsets
// are committed to the log after each batch with the member's grant
// generation, so a member that lost a partition cannot commit to it.
// Delivery is at-least-once: a batch handled but not committed when a
// member dies or stops is handled again by the next owner. With a DB the
// batch runs in one of its transactions (split where a handler fails, see
// Failures; use package dedup and outbox inside it to make side effects
// idempotent); without one, tx is nil.
//
// A member that stops, or whose partition moves to another member,
// cancels its handler's ctx and gives back the events in hand: what was
// not handled in full is not committed, so the next owner handles it, and
// nothing is parked for it. A new group starts where GroupOptions.Start
// says (earliest, latest, a time, offsets); Reset moves a stopped group's
// offsets back or forward and Delete removes it.
//
// Options.Streams, Categories and EventTypes select the events a runner
// handles; it moves past the others, so its lag counts only what it
// subscribes to.
//
// # Failures
//
// A handler error is retried with exponential backoff and jitter: the
// events before it are committed first, and each retry runs in a
// transaction of its own, so no transaction (and no hold on the database's
// one writer) is kept while the runner waits. Two kinds of error differ:
//
//   - Retry(err): transient ("not now", a dependency is restarting). The
//     event is tried again, in order, without counting as a failure, for
//     up to MaxRetryTime; only then is it parked.
//   - any other error: the event may be poison. After MaxAttempts it is
//     parked (dead-lettered with its error) and the partition goes on;
//     later events of the same stream wait behind it, parked too, to keep
//     the stream's order. Parked events are listed by a runner's Parked
//     method and handled again by its Retry method, or dropped unhandled
//     by its Skip method (an operator's decision that the event is lost to
//     this runner; counted in Status as Skipped and logged at WARN, and a
//     local projection keeps the skipped event's row in its read model's
//     esraft_skipped table).
//
// Runners stop on ctx cancellation: the handler's ctx ends with it, the
// events in hand that were not handled in full are abandoned uncommitted
// (handled again on the next start, or by the partition's next owner),
// and a backoff in progress ends at once.
package projection

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/backoff"
)

// Handler handles one event. tx is the runner's SQLite write transaction
// (nil for a group runner without a DB); do the read model's writes in it.
//
// Returning nil means the event is handled. An error made with Retry
// means "not now": the event is handed back unhandled and tried again
// after a backoff, without counting as a failure, for up to MaxRetryTime;
// use it for transient failures (a dependency restarting). Any other
// error counts as a failure: the event is retried up to MaxAttempts times
// in all, then parked as poison. ctx ends when the runner stops or a
// group member loses the event's partition: return ctx's error (or any
// error) and the event is given back uncommitted, to this runner's next
// start or the partition's next owner; it is never parked for that.
type Handler func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error

// Retry marks err as transient: a handler that returns Retry(err) is
// called again with the same event after a backoff, and the event is not
// parked unless it keeps failing so for MaxRetryTime. Retry(nil) is nil.
func Retry(err error) error {
	if err == nil {
		return nil
	}
	return &RetryError{Err: err}
}

// RetryError is a transient handler error (see Retry).
type RetryError struct{ Err error }

func (e *RetryError) Error() string { return "retry: " + e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }

// isRetry reports a handler error made by Retry.
func isRetry(err error) bool {
	var re *RetryError
	return errors.As(err, &re)
}

// Options tune a runner. Zero values take the defaults.
type Options struct {
	// BatchSize is the most events handled in one transaction (default
	// 500).
	BatchSize int
	// MaxAttempts is how many times an event is tried before it is parked
	// (default 5); attempts that return a Retry error do not count.
	MaxAttempts int
	// MaxRetryTime is how long an event whose handler keeps returning a
	// Retry error is tried again before it is parked (default 5 min;
	// retries back off up to MaxBackoff). The partition waits meanwhile:
	// events are handled in order.
	MaxRetryTime time.Duration
	// Backoff is the delay before the first retry (default 100 ms),
	// doubling up to MaxBackoff (default 5 s), with ±25% jitter.
	Backoff, MaxBackoff time.Duration
	// Streams, Categories and EventTypes, if set, select the events
	// handled (see eventstore.SubscribeOptions: a category may contain
	// '-'); others are skipped, and the position moves past them, so a
	// runner's lag counts only what it would handle.
	Streams    []string
	Categories []string
	EventTypes []string
	// Logger receives the runner's lines: parked events at WARN,
	// retries at DEBUG, partitions granted and revoked at INFO. Nil means
	// the store's logger (see eventstore.Logger).
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.MaxRetryTime <= 0 {
		o.MaxRetryTime = 5 * time.Minute
	}
}

// delay is the wait before retry n (n >= 1 is the first retry).
func (o *Options) delay(n int) time.Duration {
	return backoff.Spread(backoff.Policy{Initial: o.Backoff, Max: o.MaxBackoff}.Delay(n), 0.25)
}

// ParkedEvent is an event set aside after failing.
type ParkedEvent struct {
	Partition eventstore.Partition `json:"partition"`
	Offset    uint64               `json:"offset"`
	Stream    string               `json:"stream"`
	Error     string               `json:"error"`
	Attempts  int                  `json:"attempts"`
}

// PartitionStatus is a runner's progress in one partition.
type PartitionStatus struct {
	Partition eventstore.Partition `json:"partition"`
	Position  uint64               `json:"position"` // the next offset to handle
	Head      uint64               `json:"head"`     // the partition's next offset on this node
	Lag       uint64               `json:"lag"`      // Head - Position
	Parked    int                  `json:"parked"`
	// Skipped counts parked events an operator dropped unhandled (Skip).
	Skipped uint64 `json:"skipped"`
}

// Status is a runner's state.
type Status struct {
	Name       string            `json:"name"`
	State      string            `json:"state"` // "starting", "running", "rebuilding", "stopped", "failed: ..."
	Partitions []PartitionStatus `json:"partitions"`
	Lag        uint64            `json:"lag"`
	Parked     int               `json:"parked"`
	Skipped    uint64            `json:"skipped"`
	// Rebuild is the progress of a running rebuild (nil if none): events
	// replayed into the new read model and the total to replay.
	Rebuild *RebuildProgress `json:"rebuild,omitempty"`
	// LastRebuild is how the last rebuild that ended since the process
	// started went (nil if none ended).
	LastRebuild *RebuildResult `json:"last_rebuild,omitempty"`
}

// RebuildProgress reports a rebuild.
type RebuildProgress struct {
	Replayed uint64    `json:"replayed"`
	Total    uint64    `json:"total"`
	Started  time.Time `json:"started"`
}

// RebuildResult reports a rebuild that ended: its progress as of its end
// (for one that succeeded, as of the switch to the new read model, when
// Replayed equals Total), and its error if it failed or was abandoned.
type RebuildResult struct {
	Replayed uint64    `json:"replayed"`
	Total    uint64    `json:"total"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended"`
	Error    string    `json:"error,omitempty"`
}

// Errors of the runners.
var (
	// ErrNotParked: Retry or Skip named an event that is not parked.
	ErrNotParked = errors.New("projection: event not parked")
	// ErrRebuildRunning: a rebuild is already running.
	ErrRebuildRunning = errors.New("projection: a rebuild is already running")
	// ErrNotRunning: the runner is not running.
	ErrNotRunning = errors.New("projection: not running")
	// ErrCheckpointAhead: a local projection's checkpoint is beyond its
	// partition's head in the log, which lost events or was restored from
	// an older copy: the runner stops rather than skip what is appended at
	// the offsets in between. Rebuild replays the read model from the log.
	ErrCheckpointAhead = errors.New("projection: checkpoint beyond the log's head")
)
