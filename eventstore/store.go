package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/internal/logging"
	"github.com/esraft/esraft/raftlog"
)

// Position names a point in one raft group's applied history; pass an
// append's Position to Sync on another node to read your own write there.
type Position = raftlog.Position

// Peer is a voter of a statically bootstrapped cluster.
type Peer = raftlog.Peer

// Defaults of the limits.
const (
	DefaultMaxEventBytes   = 1 << 20
	DefaultMaxAppendEvents = 1000
	maxStreamBytes         = 4096
)

// Store is an event store over a replicated log. It is safe for
// concurrent use.
type Store struct {
	log             *raftlog.Log
	owned           bool // Close closes the log
	maxEventBytes   int
	maxAppendEvents int
	logger          *slog.Logger
}

// Option configures Open or New.
type Option interface{ apply(*settings) }

type settings struct {
	log             raftlog.Config
	tune            []func(*raftlog.Config)
	maxEventBytes   int
	maxAppendEvents int
	logger          *slog.Logger
}

type optionFunc func(*settings)

func (f optionFunc) apply(s *settings) { f(s) }

// Node makes this node a member of a cluster: its ID (stable across
// restarts) and the cluster address it listens on ("127.0.0.1:7001"),
// shared by replication and node-to-node calls. Without Node the store is
// the embedded single-node default, with no network at all.
func Node(id, addr string) Option {
	return optionFunc(func(s *settings) { s.log.NodeID, s.log.Addr = id, addr })
}

// Peers bootstraps a new cluster from a static list of voters, this node
// included; every node must be given the same list. Ignored once the node
// has data.
func Peers(peers ...Peer) Option {
	return optionFunc(func(s *settings) { s.log.Peers = append([]Peer(nil), peers...) })
}

// Join asks the member at addr to add this node to the cluster (on first
// start only).
func Join(addr string) Option { return optionFunc(func(s *settings) { s.log.Join = addr }) }

// NonVoter joins as a worker: the node holds every event and serves reads
// and subscriptions, but never counts toward a quorum.
func NonVoter() Option { return optionFunc(func(s *settings) { s.log.NonVoter = true }) }

// Partitions sets the number of partitions (default 8), fixed when the
// store is created.
func Partitions(n int) Option { return optionFunc(func(s *settings) { s.log.Partitions = n }) }

// MaxEventBytes bounds one event's data plus metadata (default 1 MiB).
func MaxEventBytes(n int) Option { return optionFunc(func(s *settings) { s.maxEventBytes = n }) }

// MaxAppendEvents bounds the events of one append (default 1,000).
func MaxAppendEvents(n int) Option { return optionFunc(func(s *settings) { s.maxAppendEvents = n }) }

// Logger sets the logger of the store and of the log Open opens (raft's
// lines included); the default writes WARN and above to stderr. Packages
// built on the store (projection, aggregate) use it unless given their
// own; see Store.Logger.
func Logger(l *slog.Logger) Option { return optionFunc(func(s *settings) { s.logger = l }) }

// LogConfig adjusts the underlying log's configuration (raft timings,
// batching, ID retention, a listener or dialer for tests) before it opens.
func LogConfig(fn func(*raftlog.Config)) Option {
	return optionFunc(func(s *settings) { s.tune = append(s.tune, fn) })
}

// Open opens (or creates) the store whose data lives in dir. With no
// options it is the embedded single-node default, which bootstraps itself
// on first start and reopens its data later; with Node and Peers or Join
// it forms or joins a cluster. It returns once the node can serve.
func Open(ctx context.Context, dir string, opts ...Option) (*Store, error) {
	s := settings{log: raftlog.Config{Dir: dir}}
	for _, o := range opts {
		o.apply(&s)
	}
	s.log.Logger = s.logger
	for _, fn := range s.tune {
		fn(&s.log)
	}
	if s.logger == nil {
		s.logger = s.log.Logger // set through LogConfig
	}
	if s.log.MaxRecordBytes == 0 {
		// The log counts data plus headers; the header names are ours.
		s.log.MaxRecordBytes = max(s.maxEventBytes, DefaultMaxEventBytes) + 64
	}
	l, err := raftlog.Open(ctx, s.log)
	if err != nil {
		return nil, fmt.Errorf("eventstore: open: %w", err)
	}
	st := newStore(l, &s)
	st.owned = true
	return st, nil
}

// New returns a store over an open log, which the caller keeps and closes.
// Only the limit options and Logger apply.
func New(l *raftlog.Log, opts ...Option) *Store {
	var s settings
	for _, o := range opts {
		o.apply(&s)
	}
	return newStore(l, &s)
}

func newStore(l *raftlog.Log, s *settings) *Store {
	st := &Store{log: l, maxEventBytes: s.maxEventBytes, maxAppendEvents: s.maxAppendEvents, logger: logging.OrDefault(s.logger)}
	if st.maxEventBytes <= 0 {
		st.maxEventBytes = DefaultMaxEventBytes
	}
	if st.maxAppendEvents <= 0 {
		st.maxAppendEvents = DefaultMaxAppendEvents
	}
	return st
}

// Close closes the store and, if Open created it, its log. Subscriptions
// end with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	if !s.owned {
		return nil
	}
	return s.log.Close()
}

// Log returns the underlying log, for packages that build on it
// (projections, consumer groups, status pages).
func (s *Store) Log() *raftlog.Log { return s.log }

// Logger returns the store's logger (see the Logger option), for the
// packages that build on the store.
func (s *Store) Logger() *slog.Logger { return s.logger }

// Partitions returns the number of partitions.
func (s *Store) Partitions() int { return s.log.Partitions() }

// PartitionOf returns the partition stream's events go to.
func (s *Store) PartitionOf(stream string) int { return s.log.Partition(stream) }

// AppendResult reports where an acknowledged append went.
type AppendResult struct {
	Stream    string
	Partition int
	// FirstVersion and LastVersion are the versions of the first and last
	// appended event; LastVersion is the expected version of the next
	// append.
	FirstVersion, LastVersion uint64
	// FirstOffset is the first event's offset in the partition.
	FirstOffset uint64
	Time        time.Time
	// Position is where the append was applied; see Sync.
	Position Position
	// Duplicate is true when every event ID had been appended before this
	// attempt: nothing was written by it, and the result is the original
	// one. The original may be this same call (the log retries internally
	// after an outcome it cannot know), so Duplicate alone does not mean
	// the caller retried.
	Duplicate bool
}

// AppendOption adjusts one append.
type AppendOption interface{ applyAppend(*appendSettings) }

type appendSettings struct{ recreate bool }

type appendOptionFunc func(*appendSettings)

func (f appendOptionFunc) applyAppend(s *appendSettings) { f(s) }

// Recreate lets an append to a soft-deleted stream succeed: the stream is
// live again and its versions go on from the last one before deletion;
// the events from before stay hidden.
func Recreate() AppendOption { return appendOptionFunc(func(s *appendSettings) { s.recreate = true }) }

// Append appends events, in order, to stream if expected holds, and
// returns once they are committed by a quorum and applied (durable on
// acknowledge). Any node accepts appends. Append then waits, within ctx,
// until the node that took it has applied it, so reads there see it; if
// ctx ends first it still returns the committed result (Sync with its
// Position waits for the local apply). It is idempotent by event ID: if
// every event ID was appended before (a retry after a timeout), nothing is
// written and the original result comes back with Duplicate set.
//
// Errors: *WrongVersionError (errors.Is ErrWrongVersion) when expected
// does not hold; ErrStreamDeleted; the validation errors (ErrEmptyStream,
// ErrEmptyEventType, ErrEventTooLarge, ErrTooManyEvents, ...);
// ErrEventIDConflict; ErrUnavailable or ErrUnknownOutcome when ctx ends
// without an outcome; ErrClosed.
func (s *Store) Append(ctx context.Context, stream string, expected ExpectedVersion, events []EventData, opts ...AppendOption) (AppendResult, error) {
	var as appendSettings
	for _, o := range opts {
		o.applyAppend(&as)
	}
	if err := checkStream(stream); err != nil {
		return AppendResult{}, err
	}
	recs, err := s.records(events)
	if err != nil {
		return AppendResult{}, err
	}
	lopts := make([]raftlog.AppendOption, 0, 2)
	if o := expected.option(); o != nil {
		lopts = append(lopts, o)
	}
	if as.recreate {
		lopts = append(lopts, raftlog.Recreate())
	}
	res, err := s.log.Append(ctx, stream, recs, lopts...)
	if err != nil {
		return AppendResult{}, s.translate(err, stream, expected)
	}
	s.readYourWrite(ctx, res.Position)
	return AppendResult{
		Stream: stream, Partition: res.Partition, FirstVersion: res.FirstKeySeq, LastVersion: res.LastKeySeq(),
		FirstOffset: res.FirstOffset, Time: res.Time, Position: res.Position, Duplicate: res.Duplicate,
	}, nil
}

// records validates events and converts them to log records.
func (s *Store) records(events []EventData) ([]raftlog.NewRecord, error) {
	switch {
	case len(events) == 0:
		return nil, ErrNoEvents
	case len(events) > s.maxAppendEvents:
		return nil, fmt.Errorf("%w: %d events, limit %d", ErrTooManyEvents, len(events), s.maxAppendEvents)
	}
	recs := make([]raftlog.NewRecord, len(events))
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i := range events {
		e := &events[i]
		if e.Type == "" {
			return nil, fmt.Errorf("%w: event %d", ErrEmptyEventType, i)
		}
		for k := range e.Metadata.Headers {
			if k == "" || k[0] == '$' {
				return nil, fmt.Errorf("%w: %q in event %d", ErrReservedHeader, k, i)
			}
		}
		if n := eventSize(e); n > s.maxEventBytes {
			return nil, fmt.Errorf("%w: event %d is %d bytes, limit %d", ErrEventTooLarge, i, n, s.maxEventBytes)
		}
		recs[i] = toRecord(e)
		if recs[i].ID == uuid.Nil {
			recs[i].ID = uuid.Must(uuid.NewV7())
		}
		if _, dup := seen[recs[i].ID]; dup {
			return nil, fmt.Errorf("%w: %s", ErrDuplicateEventID, recs[i].ID)
		}
		seen[recs[i].ID] = struct{}{}
	}
	return recs, nil
}

func checkStream(stream string) error {
	switch {
	case stream == "":
		return ErrEmptyStream
	case len(stream) > maxStreamBytes:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrStreamNameTooLong, len(stream), maxStreamBytes)
	}
	return nil
}

// translate maps the log's errors to the store's.
func (s *Store) translate(err error, stream string, expected ExpectedVersion) error {
	var kse *raftlog.KeySeqError
	switch {
	case errors.As(err, &kse):
		return &WrongVersionError{Stream: stream, Expected: expected, Actual: kse.Actual, Deleted: kse.Deleted}
	case errors.Is(err, raftlog.ErrKeyDeleted):
		return fmt.Errorf("%w: %q (append with Recreate to recreate it)", ErrStreamDeleted, stream)
	case errors.Is(err, raftlog.ErrIDConflict):
		return fmt.Errorf("%w: %v", ErrEventIDConflict, err)
	case errors.Is(err, raftlog.ErrBatchTooLarge):
		return fmt.Errorf("%w: %v", ErrAppendTooLarge, err)
	case errors.Is(err, raftlog.ErrRecordTooLarge):
		return fmt.Errorf("%w: %v", ErrEventTooLarge, err)
	case errors.Is(err, raftlog.ErrUnknownPartition):
		return fmt.Errorf("%w: %v", ErrUnknownPartition, err)
	case errors.Is(err, raftlog.ErrUnknownOutcome):
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	case errors.Is(err, raftlog.ErrClosed):
		return ErrClosed
	case errors.Is(err, raftlog.ErrNoLeader):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// DeleteStream soft-deletes stream if expected holds: it reads as deleted
// (ErrStreamDeleted) and its events disappear from stream reads, partition
// reads and subscriptions at once, on every node as it applies the
// delete; they are erased from disk soon after (see TruncateStream).
// Appending to it again needs Recreate. Deleting a deleted stream
// succeeds.
func (s *Store) DeleteStream(ctx context.Context, stream string, expected ExpectedVersion) (Position, error) {
	if err := checkStream(stream); err != nil {
		return Position{}, err
	}
	var opts []raftlog.AppendOption
	if o := expected.option(); o != nil {
		opts = append(opts, o)
	}
	res, err := s.log.DeleteKey(ctx, stream, opts...)
	if err != nil {
		return Position{}, s.translate(err, stream, expected)
	}
	s.readYourWrite(ctx, res.Position)
	return res.Position, nil
}

// TruncateStream removes the events of stream with a version below before,
// for retention and erasure: they disappear from every read at once, on
// every node as it applies the truncation, and are erased from the nodes'
// state files at their next flush (the replicated raft log keeps its copy
// until it compacts past the truncation). The stream keeps its version;
// truncating beyond the last event removes them all; truncation never
// moves back.
func (s *Store) TruncateStream(ctx context.Context, stream string, before uint64, expected ExpectedVersion) (Position, error) {
	if err := checkStream(stream); err != nil {
		return Position{}, err
	}
	var opts []raftlog.AppendOption
	if o := expected.option(); o != nil {
		opts = append(opts, o)
	}
	res, err := s.log.TruncateKey(ctx, stream, before, opts...)
	if err != nil {
		return Position{}, s.translate(err, stream, expected)
	}
	s.readYourWrite(ctx, res.Position)
	return res.Position, nil
}

// readYourWrite waits until this node has applied a write acknowledged
// by the leader, so that reads on the node that took the write see it. If
// ctx ends first the write still stands (it is committed): the wait is
// best effort, and the caller is told of success.
func (s *Store) readYourWrite(ctx context.Context, pos Position) {
	if err := s.log.WaitApplied(ctx, pos); err != nil {
		level := slog.LevelWarn
		if ctx.Err() != nil {
			level = slog.LevelDebug // the caller's deadline: expected under load
		}
		s.logger.Log(ctx, level, "eventstore: write committed but not yet applied on this node; reads here may miss it",
			"group", pos.Group, "index", pos.Index, "err", err)
	}
}

// Sync waits until this node has applied pos (from an AppendResult or a
// delete made on another node), so that its reads include that write.
func (s *Store) Sync(ctx context.Context, pos Position) error {
	return s.readErr(s.log.WaitApplied(ctx, pos))
}

// Barrier waits until this node's reads include every write acknowledged
// anywhere before the call (a read barrier through each raft group's
// leader). Use it before reading state you will decide on, on a node that
// may not have taken the writes itself; it costs a round trip to the
// leader.
func (s *Store) Barrier(ctx context.Context) error {
	for g := 0; g < s.log.Groups(); g++ {
		if err := s.log.ReadBarrier(ctx, g); err != nil {
			if errors.Is(err, raftlog.ErrNoLeader) {
				return fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
			return s.readErr(err)
		}
	}
	return nil
}

func (s *Store) readErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftlog.ErrClosed):
		return ErrClosed
	case errors.Is(err, raftlog.ErrUnknownPartition):
		return fmt.Errorf("%w: %v", ErrUnknownPartition, err)
	}
	return err
}
