package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// Position names a point in one raft group's applied history; pass an
// append's Position to Sync on another node to read your own write there.
type Position = raftlog.Position

// Peer is a voter of a statically bootstrapped cluster.
type Peer = raftlog.Peer

// TLSConfig secures the cluster address with mutual TLS 1.3 and node
// identities in certificates; see raftlog.TLSConfig and SECURITY.md.
type TLSConfig = raftlog.TLSConfig

// Defaults of the limits Open gives the log (MaxEventBytes,
// MaxAppendEvents).
const (
	DefaultMaxEventBytes   = 1 << 20
	DefaultMaxAppendEvents = 1000
	// maxStreamBytes is the log's key limit. The store checks stream
	// names itself because reads must reject the same names and the log
	// checks keys only on writes.
	maxStreamBytes = 4096
)

// Store is an event store over a replicated log. It is safe for
// concurrent use.
type Store struct {
	log   Log
	owned bool // Close closes the log
	// maxAppendEvents is the log's MaxBatchRecords when Open set it, 0
	// over a log from New. It tells ErrTooManyEvents from
	// ErrAppendTooLarge: the log reports both as raftlog.ErrBatchTooLarge.
	maxAppendEvents int
	logger          *slog.Logger
	validator       atomic.Pointer[validatorRef] // nil: appends are not validated
	enc             *crypt                       // nil: nothing is encrypted (crypto.go)
	encErr          error                        // a bad Encryption given to New
}

// Option configures Open or New.
type Option interface{ apply(*settings) }

type settings struct {
	log    raftlog.Config
	tune   []func(*raftlog.Config)
	logger *slog.Logger
	enc    *Encryption
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

// TLS secures the cluster address (Node) with mutual TLS: every node
// presents a certificate from the cluster's CA naming it, and only
// members may replicate, forward writes or read (see SECURITY.md).
// Without TLS, membership changes are accepted from loopback only.
func TLS(c TLSConfig) Option {
	return optionFunc(func(s *settings) { s.log.TLS = &c })
}

// TLSFiles is TLS with this node's certificate and key and the cluster's
// CA read from PEM files, reloaded when they change.
func TLSFiles(cluster, certFile, keyFile, caFile string) Option {
	return TLS(TLSConfig{Cluster: cluster, CertFile: certFile, KeyFile: keyFile, CAFile: caFile})
}

// Partitions sets the number of partitions (default 8), fixed when the
// store is created.
func Partitions(n int) Option { return optionFunc(func(s *settings) { s.log.Partitions = n }) }

// MaxEventBytes bounds one event as the log stores it (default 1 MiB;
// n <= 0: the default): its data, type, correlation and causation IDs,
// schema version and headers, names and values, the store's own two-byte
// names for the type, correlation, causation and schema version included
// ("$t", "$c", "$k", "$v"). An event of type
// "E" with no metadata is len(Data)+3 bytes. It sets the log's
// MaxRecordBytes, and the log enforces it. Open only: see New.
func MaxEventBytes(n int) Option {
	return optionFunc(func(s *settings) { s.log.MaxRecordBytes = max(n, 0) })
}

// MaxAppendEvents bounds the events of one append (default 1,000; n <= 0:
// the default). It sets the log's MaxBatchRecords, and the log enforces
// it. Open only: see New.
func MaxAppendEvents(n int) Option {
	return optionFunc(func(s *settings) { s.log.MaxBatchRecords = max(n, 0) })
}

// Logger sets the logger of the store and of the log Open opens (raft's
// lines included); the default writes WARN and above to stderr. Packages
// built on the store (projection, aggregate) use it unless given their
// own; see Store.Logger.
func Logger(l *slog.Logger) Option { return optionFunc(func(s *settings) { s.logger = l }) }

// LogConfig adjusts the underlying log's configuration (raft timings,
// batching, ID retention, a listener or dialer for tests) before it opens.
// It runs after the other options: a MaxRecordBytes or MaxBatchRecords it
// sets overrides MaxEventBytes or MaxAppendEvents. The bytes of one
// append together are bounded by the log's MaxBatchBytes (8 MiB by
// default), set here.
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
	// The log enforces the limits; the store only names them.
	if s.log.MaxRecordBytes == 0 {
		s.log.MaxRecordBytes = DefaultMaxEventBytes
	}
	if s.log.MaxBatchRecords == 0 {
		s.log.MaxBatchRecords = DefaultMaxAppendEvents
	}
	var enc *crypt
	if s.enc != nil {
		var err error
		if enc, err = newCrypt(s.enc); err != nil {
			return nil, err
		}
	}
	l, err := raftlog.Open(ctx, s.log)
	if err != nil {
		return nil, fmt.Errorf("eventstore: open: %w", err)
	}
	return &Store{log: l, owned: true, maxAppendEvents: s.log.MaxBatchRecords, logger: l.Logger(), enc: enc}, nil
}

// New returns a store over an open log (an embedded *raftlog.Log or a
// *raftlog.Remote), which the caller keeps and closes. The log's limits
// are the store's: an event is bounded by its MaxRecordBytes, an append by
// its MaxBatchRecords and MaxBatchBytes. Only the Logger option applies
// (the default is the log's logger); the limit options configure the log
// Open creates. A store from New over a *raftlog.Log cannot tell an append
// with too many events from one with too many bytes (the log reports both
// alike): both are ErrAppendTooLarge, never ErrTooManyEvents; a Remote
// reports its limit (MaxBatchRecords), so a store over it can.
func New(l Log, opts ...Option) *Store {
	var s settings
	for _, o := range opts {
		o.apply(&s)
	}
	if s.logger == nil {
		s.logger = l.Logger()
	}
	st := &Store{log: l, logger: s.logger}
	if s.enc != nil {
		// A bad Encryption fails every append and read of an encrypted
		// event with the reason (New returns no error).
		st.enc, st.encErr = newCrypt(s.enc)
	}
	if lim, ok := l.(interface{ MaxBatchRecords() int }); ok {
		st.maxAppendEvents = lim.MaxBatchRecords()
	}
	return st
}

// NewOwned is New for a log the store owns: Close closes it.
func NewOwned(l Log, opts ...Option) *Store {
	s := New(l, opts...)
	s.owned = true
	return s
}

// Close closes the store and, if Open created it, its log. Subscriptions
// end with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	if !s.owned {
		return nil
	}
	return s.log.Close()
}

// Log returns the underlying embedded log, for packages that build on it
// (status pages, cluster membership); nil for a store over a remote log
// (see Source).
func (s *Store) Log() *raftlog.Log {
	l, _ := s.log.(*raftlog.Log)
	return l
}

// Source returns the log the store runs on, embedded or remote.
func (s *Store) Source() Log { return s.log }

// Logger returns the store's logger (see the Logger option), for the
// packages that build on the store.
func (s *Store) Logger() *slog.Logger { return s.logger }

// Partitions returns the number of partitions.
func (s *Store) Partitions() int { return s.log.Partitions() }

// PartitionOf returns the partition stream's events go to.
func (s *Store) PartitionOf(stream string) Partition { return s.log.Partition(stream) }

// AppendResult reports where an acknowledged append went.
type AppendResult struct {
	Stream    string
	Partition Partition
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
// Errors: the Validator's error (see SetValidator), before anything is
// proposed; *WrongVersionError (errors.Is ErrWrongVersion) when expected
// does not hold; ErrStreamDeleted; the validation errors (ErrEmptyStream,
// ErrEmptyEventType, ErrEventTooLarge, ErrTooManyEvents, ...);
// ErrEventIDConflict; ErrUnavailable or ErrUnknownOutcome when ctx ends
// without an outcome; ErrClosed. The store checks what is its own (stream
// names, event types, header names); the log checks the rest (the limits,
// event IDs, which it assigns when zero) and the store translates its
// errors, wrapping them.
func (s *Store) Append(ctx context.Context, stream string, expected ExpectedVersion, events []EventData, opts ...AppendOption) (AppendResult, error) {
	var as appendSettings
	for _, o := range opts {
		o.applyAppend(&as)
	}
	if err := checkStream(stream); err != nil {
		return AppendResult{}, err
	}
	versions, err := s.validate(ctx, stream, events)
	if err != nil {
		return AppendResult{}, err
	}
	recs, err := records(events, versions)
	if err != nil {
		return AppendResult{}, err
	}
	if err := s.encryptRecords(ctx, stream, recs); err != nil {
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
		return AppendResult{}, s.translate(err, stream, expected, len(events))
	}
	s.readYourWrite(ctx, res.Position)
	return AppendResult{
		Stream: stream, Partition: res.Partition, FirstVersion: res.FirstKeySeq, LastVersion: res.LastKeySeq(),
		FirstOffset: res.FirstOffset, Time: res.Time, Position: res.Position, Duplicate: res.Duplicate,
	}, nil
}

// records checks what the log cannot (event types, header names) and
// converts events to log records. The log checks the rest. versions are
// the schema versions the validator gave, nil without one.
func records(events []EventData, versions []int) ([]raftlog.NewRecord, error) {
	recs := make([]raftlog.NewRecord, len(events))
	n, size := 0, 0
	for i := range events {
		n += recordHeaders(&events[i])
		size += len(events[i].Type)
	}
	// One allocation each for the batch's headers and event types.
	headers := make([]raftlog.Header, n)
	types := make([]byte, 0, size)
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
		v := e.Metadata.SchemaVersion
		if versions != nil {
			v = versions[i]
		}
		k, at := recordHeaders(e), len(types)
		types = append(types, e.Type...)
		recs[i] = toRecord(headers[:0:k], types[at:len(types):len(types)], e, v)
		headers = headers[k:]
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

// translate maps the log's errors to the store's. Each store error wraps
// the log's error it came from, so errors.Is and errors.As reach both.
// events is the number of events appended (0 for a delete or truncate).
// The log's messages count records; record i is event i.
func (s *Store) translate(err error, stream string, expected ExpectedVersion, events int) error {
	var kse *raftlog.KeySeqError
	switch {
	case errors.As(err, &kse):
		return &WrongVersionError{Stream: stream, Expected: expected, Actual: kse.Actual, Deleted: kse.Deleted, cause: err}
	case errors.Is(err, raftlog.ErrKeyDeleted):
		return fmt.Errorf("%w: %q (append with Recreate to recreate it): %w", ErrStreamDeleted, stream, err)
	case errors.Is(err, raftlog.ErrEmptyBatch):
		return fmt.Errorf("%w: %w", ErrNoEvents, err)
	case errors.Is(err, raftlog.ErrDuplicateID):
		return fmt.Errorf("%w: %w", ErrDuplicateEventID, err)
	case errors.Is(err, raftlog.ErrIDConflict):
		return fmt.Errorf("%w: %w", ErrEventIDConflict, err)
	case errors.Is(err, raftlog.ErrBatchTooLarge):
		if s.maxAppendEvents > 0 && events > s.maxAppendEvents {
			return fmt.Errorf("%w: %w", ErrTooManyEvents, err)
		}
		return fmt.Errorf("%w: %w", ErrAppendTooLarge, err)
	case errors.Is(err, raftlog.ErrRecordTooLarge):
		return fmt.Errorf("%w: %w", ErrEventTooLarge, err)
	case errors.Is(err, raftlog.ErrUnknownPartition):
		return fmt.Errorf("%w: %w", ErrUnknownPartition, err)
	case errors.Is(err, raftlog.ErrUnknownOutcome):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
	case errors.Is(err, raftlog.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, raftlog.ErrNoLeader):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
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
		return Position{}, s.translate(err, stream, expected, 0)
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
		return Position{}, s.translate(err, stream, expected, 0)
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
			"shard", pos.Shard, "index", pos.Index, "err", err)
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
	for sh := raftlog.Shard(0); int(sh) < s.log.Shards(); sh++ {
		if err := s.log.ReadBarrier(ctx, sh); err != nil {
			if errors.Is(err, raftlog.ErrNoLeader) {
				return fmt.Errorf("%w: %w", ErrUnavailable, err)
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
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, raftlog.ErrUnknownPartition):
		return fmt.Errorf("%w: %w", ErrUnknownPartition, err)
	}
	return err
}
