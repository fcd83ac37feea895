package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/internal/logging"
)

// Store is what a Repository needs of the event store; *eventstore.Store
// implements it.
type Store interface {
	Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData, opts ...eventstore.AppendOption) (eventstore.AppendResult, error)
	ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.Event, error)
	ReadStreamBackward(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.Event, error)
	TruncateStream(ctx context.Context, stream string, before uint64, expected eventstore.ExpectedVersion) (eventstore.Position, error)
}

var _ Store = (*eventstore.Store)(nil)

// Aggregate is an aggregate's state as of a version of its stream.
type Aggregate[S any] struct {
	ID string
	// Version is the version of the last event applied to State: the
	// number of events the aggregate has had.
	Version uint64
	State   S
}

// Command decides, from the aggregate's current state, the events to
// append (values of registered event types). It returns the domain's own
// error to refuse, and must have no side effects and must not modify
// state: Update may run it several times, on fresher states. Deciding no
// events is allowed (nothing is written).
type Command[S any] func(state S) ([]any, error)

// RetryPolicy bounds Update's retries on a version conflict.
type RetryPolicy struct {
	// Attempts is the most times Update runs the command (default 10;
	// 1 means never retry).
	Attempts int
	// Backoff bounds the random wait before the second attempt (default
	// 1 ms); the bound doubles for each further attempt, up to MaxBackoff
	// (default 100 ms). Random waits keep racing writers from colliding
	// again in lockstep.
	Backoff, MaxBackoff time.Duration
}

// DefaultRetryPolicy is the policy of a repository without WithRetry.
var DefaultRetryPolicy = RetryPolicy{Attempts: 10, Backoff: time.Millisecond, MaxBackoff: 100 * time.Millisecond}

// RepositoryOption configures NewRepository.
type RepositoryOption interface{ applyRepo(*repoConfig) }

type repoConfig struct {
	retry      RetryPolicy
	onSnapshot func(ctx context.Context, stream string, err error)
	logger     *slog.Logger
}

type repoOptionFunc func(*repoConfig)

func (f repoOptionFunc) applyRepo(c *repoConfig) { f(c) }

// WithRetry sets Update's retry policy; zero fields take the defaults of
// DefaultRetryPolicy.
func WithRetry(p RetryPolicy) RepositoryOption {
	return repoOptionFunc(func(c *repoConfig) { c.retry = p })
}

// WithLogger sets the repository's logger: snapshot failures (without
// OnSnapshotError) at WARN, version conflicts Update retries at DEBUG.
// The default is the store's logger if it has one (a Logger method, as
// *eventstore.Store), else WARN and above to stderr.
func WithLogger(l *slog.Logger) RepositoryOption {
	return repoOptionFunc(func(c *repoConfig) { c.logger = l })
}

// OnSnapshotError sets the function told about snapshots that could not
// be written, or read and decoded (the default logs them at WARN to the
// repository's logger, see WithLogger). Such failures never fail a command or a load: the
// aggregate is loaded from its events instead.
func OnSnapshotError(fn func(ctx context.Context, stream string, err error)) RepositoryOption {
	return repoOptionFunc(func(c *repoConfig) { c.onSnapshot = fn })
}

// Repository loads and changes aggregates of one Type in a store. It is
// safe for concurrent use.
type Repository[S any] struct {
	store Store
	typ   *Type[S]
	cfg   repoConfig
}

// NewRepository returns a repository of aggregates of type t in store. It
// freezes t: no more On calls.
func NewRepository[S any](store Store, t *Type[S], opts ...RepositoryOption) *Repository[S] {
	cfg := repoConfig{retry: DefaultRetryPolicy}
	for _, o := range opts {
		o.applyRepo(&cfg)
	}
	d := DefaultRetryPolicy
	if cfg.retry.Attempts <= 0 {
		cfg.retry.Attempts = d.Attempts
	}
	if cfg.retry.Backoff <= 0 {
		cfg.retry.Backoff = d.Backoff
	}
	if cfg.retry.MaxBackoff <= 0 {
		cfg.retry.MaxBackoff = max(d.MaxBackoff, cfg.retry.Backoff)
	}
	if cfg.logger == nil {
		if s, ok := store.(interface{ Logger() *slog.Logger }); ok {
			cfg.logger = s.Logger()
		}
		cfg.logger = logging.OrDefault(cfg.logger)
	}
	if cfg.onSnapshot == nil {
		log := cfg.logger
		cfg.onSnapshot = func(ctx context.Context, stream string, err error) {
			log.WarnContext(ctx, "aggregate: snapshot failed", "stream", stream, "err", err)
		}
	}
	if t.snapEvery > 0 {
		if err := checkSnapshotState[S](t.reg.codec); err != nil {
			panic(err.Error())
		}
	}
	t.frozen.Store(true)
	return &Repository[S]{store: store, typ: t, cfg: cfg}
}

// checkSnapshotState refuses, for the JSON codec, a state struct with
// unexported fields and no MarshalJSON: its snapshots would silently lose
// those fields, and loads from them would be wrong.
func checkSnapshotState[S any](c Codec) error {
	if _, ok := c.(jsonCodec); !ok {
		return nil
	}
	t := reflect.TypeFor[S]()
	if t.Kind() != reflect.Struct || t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) {
		return nil
	}
	for i := range t.NumField() {
		if f := t.Field(i); !f.IsExported() && !f.Anonymous {
			return fmt.Errorf("aggregate: snapshots of %v would lose its unexported field %s: export it, implement json.Marshaler and json.Unmarshaler, or use another codec", t, f.Name)
		}
	}
	return nil
}

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

// Type returns the repository's aggregate type.
func (r *Repository[S]) Type() *Type[S] { return r.typ }

// loaded is an aggregate as loaded, with what the save needs to know of
// its snapshot.
type loaded[S any] struct {
	agg Aggregate[S]
	// snapVersion is the aggregate version of the snapshot used (0: none);
	// snapStreamVersion is the version of the snapshot stream, the
	// expectation of the next snapshot's append.
	snapVersion, snapStreamVersion uint64
}

// pageSize is how many events a load reads at once.
const pageSize = 1000

// Load returns aggregate id: its latest usable snapshot (if the type takes
// snapshots) plus the events after it, as this node's replica holds them.
// An aggregate without events is a *NotFoundError.
func (r *Repository[S]) Load(ctx context.Context, id string) (Aggregate[S], error) {
	l, err := r.load(ctx, id)
	if err != nil {
		return Aggregate[S]{}, err
	}
	return l.agg, nil
}

func (r *Repository[S]) load(ctx context.Context, id string) (*loaded[S], error) {
	return r.loadUpTo(ctx, id, latest)
}

// latest is the version bound of a load of the current state.
const latest = math.MaxUint64

// loadUpTo loads aggregate id up to version upTo at most: from a snapshot
// at or below upTo (never one beyond it), then the events after it.
func (r *Repository[S]) loadUpTo(ctx context.Context, id string, upTo uint64) (*loaded[S], error) {
	if id == "" {
		return nil, ErrEmptyID
	}
	l := &loaded[S]{agg: Aggregate[S]{ID: id}}
	stream := r.typ.Stream(id)
	if r.typ.snapEvery > 0 {
		r.readSnapshot(ctx, id, l, upTo)
	}
	next := l.agg.Version + 1
	for next <= upTo {
		page := pageSize
		if upTo-next < pageSize {
			page = int(upTo - next + 1)
		}
		evs, err := r.store.ReadStream(ctx, stream, next, page)
		if errors.Is(err, eventstore.ErrStreamDeleted) {
			return nil, &NotFoundError{Type: r.typ.category, ID: id}
		}
		if err != nil {
			return nil, fmt.Errorf("aggregate: load %s: %w", stream, err)
		}
		for i := range evs {
			ev := &evs[i]
			if ev.Version != next {
				return nil, fmt.Errorf("%w: %s starts at version %d, the state needs version %d", ErrHistoryTruncated, stream, ev.Version, next)
			}
			// A shredded event (its key deleted) is skipped: its
			// version counts, its effect is gone (doc.go).
			if ev.Unreadable == nil {
				if err := r.applyStored(&l.agg.State, ev); err != nil {
					return nil, err
				}
			}
			next++
		}
		if len(evs) < page {
			break
		}
	}
	l.agg.Version = next - 1
	if l.agg.Version == 0 {
		return nil, &NotFoundError{Type: r.typ.category, ID: id}
	}
	return l, nil
}

func (r *Repository[S]) applyStored(s *S, ev *eventstore.Event) error {
	name, e, err := r.typ.reg.decode(ev)
	if err != nil {
		return err
	}
	h := r.typ.apply[name]
	if h == nil {
		return fmt.Errorf("%w: %q at %s version %d (type %q has no On for it)", ErrNoHandler, name, ev.Stream, ev.Version, r.typ.category)
	}
	h(s, e)
	return nil
}

// Snapshot events: type snapshotType, the state encoded with the
// registry's codec, the aggregate version and the state's revision in
// headers.
const (
	snapshotType          = "snapshot"
	snapshotVersionHeader = "esraft.version"
)

// readSnapshot sets l from the latest snapshot if it is of the current
// revision, decodes and is at or below version upTo; otherwise l stays
// empty and the aggregate loads from its events.
func (r *Repository[S]) readSnapshot(ctx context.Context, id string, l *loaded[S], upTo uint64) {
	stream := r.typ.SnapshotStream(id)
	evs, err := r.store.ReadStreamBackward(ctx, stream, 0, 1)
	if err != nil {
		r.cfg.onSnapshot(ctx, stream, fmt.Errorf("read: %w", err))
		return
	}
	if len(evs) == 0 {
		return
	}
	ev := &evs[0]
	l.snapStreamVersion = ev.Version
	if ev.Unreadable != nil {
		return // shredded with its aggregate's events
	}
	if ev.Metadata.Headers[revisionHeader] != strconv.Itoa(r.typ.snapRev) {
		return // of another revision of the state: ignored by design
	}
	v, err := strconv.ParseUint(ev.Metadata.Headers[snapshotVersionHeader], 10, 64)
	if err != nil || v == 0 {
		r.cfg.onSnapshot(ctx, stream, fmt.Errorf("snapshot %d has a bad version header %q", ev.Version, ev.Metadata.Headers[snapshotVersionHeader]))
		return
	}
	if v > upTo {
		return // a temporal load before the snapshot: from the events
	}
	var s S
	if err := r.typ.reg.codec.Unmarshal(ev.Data, &s); err != nil {
		r.cfg.onSnapshot(ctx, stream, fmt.Errorf("decode snapshot %d: %w", ev.Version, err))
		return
	}
	l.agg.State, l.agg.Version, l.snapVersion = s, v, v
}

// Create runs cmd on the zero state and appends its events as the first
// of aggregate id. If the aggregate has events already, nothing is
// appended and the error matches ErrAlreadyExists (it wraps the store's
// *eventstore.WrongVersionError). cmd's own error is returned as is.
func (r *Repository[S]) Create(ctx context.Context, id string, cmd Command[S]) (Aggregate[S], error) {
	if id == "" {
		return Aggregate[S]{}, ErrEmptyID
	}
	l := &loaded[S]{agg: Aggregate[S]{ID: id}}
	events, err := cmd(l.agg.State)
	if err != nil {
		return Aggregate[S]{}, err
	}
	if len(events) == 0 {
		return Aggregate[S]{}, fmt.Errorf("%w: %s", ErrNoEvents, r.typ.Stream(id))
	}
	if _, err := r.save(ctx, l, events, eventstore.NoStream); err != nil {
		var wv *eventstore.WrongVersionError
		if errors.As(err, &wv) {
			return Aggregate[S]{}, fmt.Errorf("%w: %s %q: %w", ErrAlreadyExists, r.typ.category, id, err)
		}
		return Aggregate[S]{}, err
	}
	return l.agg, nil
}

// Execute loads aggregate id, runs cmd on its state and appends the events
// cmd decides, expecting the stream to be still at the loaded version. It
// returns the aggregate with the events applied. Errors: cmd's own error
// as is (nothing appended); *NotFoundError; *ConflictError if another
// writer appended first (nothing appended; see Update); store errors.
func (r *Repository[S]) Execute(ctx context.Context, id string, cmd Command[S]) (Aggregate[S], error) {
	agg, _, err := r.execute(ctx, id, cmd)
	return agg, err
}

// execute reports separately whether err is a version conflict, so that a
// command's own error that happens to match ErrConflict is never retried.
func (r *Repository[S]) execute(ctx context.Context, id string, cmd Command[S]) (agg Aggregate[S], conflict bool, err error) {
	l, err := r.load(ctx, id)
	if err != nil {
		return Aggregate[S]{}, false, err
	}
	events, err := cmd(l.agg.State)
	if err != nil {
		return Aggregate[S]{}, false, err
	}
	if len(events) == 0 {
		return l.agg, false, nil
	}
	loadedAt := l.agg.Version
	if _, err := r.save(ctx, l, events, eventstore.Exact(loadedAt)); err != nil {
		var wv *eventstore.WrongVersionError
		if errors.As(err, &wv) && !wv.Deleted {
			return Aggregate[S]{}, true, &ConflictError{Type: r.typ.category, ID: id, Loaded: loadedAt, Actual: wv.Actual, Attempts: 1, err: wv}
		}
		if errors.As(err, &wv) || errors.Is(err, eventstore.ErrStreamDeleted) {
			return Aggregate[S]{}, false, &NotFoundError{Type: r.typ.category, ID: id}
		}
		return Aggregate[S]{}, false, err
	}
	return l.agg, false, nil
}

// Update is Execute retried on version conflicts: after a conflict it
// waits a short random time, reloads the aggregate and runs cmd again on
// the fresh state, up to the repository's RetryPolicy.Attempts times in
// all. Other errors, cmd's own included, are returned at once. When the
// attempts run out the error is the last *ConflictError, with Attempts
// set; if ctx ends while waiting to retry, the error wraps ctx's error
// and that *ConflictError.
func (r *Repository[S]) Update(ctx context.Context, id string, cmd Command[S]) (Aggregate[S], error) {
	p := r.cfg.retry
	bounds := backoff.Policy{Initial: p.Backoff, Max: p.MaxBackoff}
	for attempt := 1; ; attempt++ {
		agg, conflict, err := r.execute(ctx, id, cmd)
		if !conflict {
			return agg, err
		}
		if attempt >= p.Attempts {
			ce := err.(*ConflictError)
			ce.Attempts = attempt
			return Aggregate[S]{}, ce
		}
		wait := backoff.Full(bounds.Delay(attempt))
		r.cfg.logger.DebugContext(ctx, "aggregate: version conflict; retrying", "type", r.typ.category, "id", id, "attempts", attempt, "in", wait, "err", err)
		if backoff.Sleep(ctx, wait) != nil {
			return Aggregate[S]{}, fmt.Errorf("aggregate: update %s %q: %w (after %d conflicts: %w)", r.typ.category, id, ctx.Err(), attempt, err)
		}
	}
}

// save appends events after l's version with the given expectation, then
// applies them to l and takes a snapshot if one is due. A snapshot
// failure is reported, never returned: the events are committed by then.
func (r *Repository[S]) save(ctx context.Context, l *loaded[S], events []any, expected eventstore.ExpectedVersion) (eventstore.AppendResult, error) {
	stream := r.typ.Stream(l.agg.ID)
	m := metaOf(ctx)
	data := make([]eventstore.EventData, len(events))
	values := make([]any, len(events))
	names := make([]string, len(events))
	for i, e := range events {
		ed, v, err := r.typ.reg.encode(e)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if r.typ.apply[ed.Type] == nil {
			return eventstore.AppendResult{}, fmt.Errorf("%w: %q is registered but type %q has no On for it", ErrUnregisteredEvent, ed.Type, r.typ.category)
		}
		ed.Metadata.CorrelationID, ed.Metadata.CausationID = m.correlation, m.causation
		data[i], values[i], names[i] = ed, v, ed.Type
	}
	res, err := r.store.Append(ctx, stream, expected, data)
	if err != nil {
		return res, err
	}
	for i, v := range values {
		r.typ.apply[names[i]](&l.agg.State, v)
	}
	l.agg.Version = res.LastVersion
	if r.typ.snapEvery > 0 && l.agg.Version-l.snapVersion >= uint64(r.typ.snapEvery) {
		r.writeSnapshot(ctx, l)
	}
	return res, nil
}

func (r *Repository[S]) writeSnapshot(ctx context.Context, l *loaded[S]) {
	stream := r.typ.SnapshotStream(l.agg.ID)
	data, err := r.typ.reg.codec.Marshal(l.agg.State)
	if err != nil {
		r.cfg.onSnapshot(ctx, stream, fmt.Errorf("encode: %w", err))
		return
	}
	res, err := r.store.Append(ctx, stream, eventstore.Exact(l.snapStreamVersion), []eventstore.EventData{{
		Type: snapshotType, Data: data,
		Metadata: eventstore.Metadata{Headers: map[string]string{
			snapshotVersionHeader: strconv.FormatUint(l.agg.Version, 10),
			revisionHeader:        strconv.Itoa(r.typ.snapRev),
		}},
	}})
	if errors.Is(err, eventstore.ErrWrongVersion) {
		return // another writer stored a snapshot since the load: keep it
	}
	if err != nil {
		r.cfg.onSnapshot(ctx, stream, fmt.Errorf("append: %w", err))
		return
	}
	l.snapVersion, l.snapStreamVersion = l.agg.Version, res.LastVersion
	if res.LastVersion > 1 {
		// Only the latest snapshot is ever read: drop the older ones.
		if _, err := r.store.TruncateStream(ctx, stream, res.LastVersion, eventstore.Any); err != nil {
			r.cfg.onSnapshot(ctx, stream, fmt.Errorf("truncate older snapshots: %w", err))
		}
	}
}
