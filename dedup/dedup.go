package dedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors returned by the package; errors that wrap a database failure keep
// it in the chain.
var (
	// ErrEmptyConsumer: a consumer name is empty.
	ErrEmptyConsumer = errors.New("dedup: empty consumer name")
	// ErrEmptyID: a message's ID is empty.
	ErrEmptyID = errors.New("dedup: empty message id")
	// ErrIDTooLong: a consumer name or message ID exceeds MaxIDBytes.
	ErrIDTooLong = errors.New("dedup: consumer name or message id too long")
	// ErrNilFunc: Wrap was given a nil handler or ID function.
	ErrNilFunc = errors.New("dedup: nil handler or id function")
	// ErrBadRetention: a retention with a negative limit, or with no limit
	// at all where one is needed.
	ErrBadRetention = errors.New("dedup: bad retention")
	// ErrNoSchema: the database has no dedup table; run Migrate.
	ErrNoSchema = errors.New("dedup: table missing (run dedup.Migrate)")
)

// MaxIDBytes bounds consumer names and message IDs: an ID is an index key.
const MaxIDBytes = 1024

// Table is the name of the deduplication table Schema creates.
const Table = "esraft_dedup"

// Schema creates the deduplication table; it is idempotent, so it can run
// on every start or sit in your own migrations. seq orders marks by
// insertion, seen_at is Unix milliseconds; (consumer, seen_at) serves both
// the age and the count pruning.
const Schema = `
CREATE TABLE IF NOT EXISTS esraft_dedup (
	seq        INTEGER PRIMARY KEY,
	consumer   TEXT    NOT NULL,
	message_id TEXT    NOT NULL,
	seen_at    INTEGER NOT NULL,
	UNIQUE (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS esraft_dedup_age ON esraft_dedup (consumer, seen_at);
`

// Execer runs a statement: *sql.DB, *sql.Tx and *sql.Conn are Execers.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Querier reads one row: *sql.DB, *sql.Tx and *sql.Conn are Queriers.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ Execer  = (*sql.Tx)(nil)
	_ Execer  = (*sql.DB)(nil)
	_ Querier = (*sql.Tx)(nil)
	_ Querier = (*sql.DB)(nil)
)

// Migrate runs Schema on db (use the writing connection).
func Migrate(ctx context.Context, db Execer) error {
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return fmt.Errorf("dedup: create table: %w", err)
	}
	return nil
}

func checkKey(consumer, id string) error {
	switch {
	case consumer == "":
		return ErrEmptyConsumer
	case id == "":
		return fmt.Errorf("%w (consumer %q)", ErrEmptyID, consumer)
	case len(consumer) > MaxIDBytes || len(id) > MaxIDBytes:
		return fmt.Errorf("%w: %d and %d bytes, limit %d", ErrIDTooLong, len(consumer), len(id), MaxIDBytes)
	}
	return nil
}

// dbErr translates a database error, naming a missing table.
func dbErr(op string, err error) error {
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return fmt.Errorf("%w: %s: %w", ErrNoSchema, op, err)
	}
	return fmt.Errorf("dedup: %s: %w", op, err)
}

// Mark records that consumer handled message id at time at, in tx (the
// handler's transaction), and reports whether this is the first mark: false
// means the message was handled before (and its mark is still kept) and
// must be skipped. The mark commits or rolls back with tx.
func Mark(ctx context.Context, tx Execer, consumer, id string, at time.Time) (first bool, err error) {
	if err := checkKey(consumer, id); err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx,
		`INSERT INTO esraft_dedup (consumer, message_id, seen_at) VALUES (?, ?, ?)
		 ON CONFLICT (consumer, message_id) DO NOTHING`,
		consumer, id, at.UnixMilli())
	if err != nil {
		return false, dbErr("mark", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, dbErr("mark", err)
	}
	return n == 1, nil
}

// Seen reports whether consumer's mark for message id is kept.
func Seen(ctx context.Context, q Querier, consumer, id string) (bool, error) {
	if err := checkKey(consumer, id); err != nil {
		return false, err
	}
	var one int
	err := q.QueryRowContext(ctx,
		`SELECT 1 FROM esraft_dedup WHERE consumer = ? AND message_id = ?`, consumer, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, dbErr("lookup", err)
	}
	return true, nil
}

// Handler handles one message inside the caller's write transaction tx.
// It is the shape of a projection handler with M = eventstore.Event.
type Handler[M any] func(ctx context.Context, tx *sql.Tx, m M) error

// Option adjusts Wrap.
type Option interface{ apply(*options) }

type options struct{ now func() time.Time }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the clock whose time Wrap stores in each mark (default
// time.Now); the age retention compares against it.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}

// Wrap returns a handler that runs h at most once per message ID for
// consumer, as long as the message's mark is kept: it marks the message in
// tx, runs h if the mark is new, and returns nil without running h if the
// message was handled before. id extracts a message's ID (for an
// eventstore.Event, ev.ID.String()).
//
// The caller must roll tx back when the wrapped handler returns an error
// (as a projection runner does); committing after an error would keep a
// mark for a message whose effect was not written.
//
// Errors: ErrEmptyConsumer, ErrIDTooLong or ErrNilFunc at once; from the
// returned handler, ErrEmptyID for a message without an ID, ErrNoSchema,
// and h's own errors unchanged.
func Wrap[M any](consumer string, id func(M) string, h Handler[M], opts ...Option) (Handler[M], error) {
	switch {
	case consumer == "":
		return nil, ErrEmptyConsumer
	case len(consumer) > MaxIDBytes:
		return nil, fmt.Errorf("%w: consumer is %d bytes, limit %d", ErrIDTooLong, len(consumer), MaxIDBytes)
	case id == nil || h == nil:
		return nil, ErrNilFunc
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return func(ctx context.Context, tx *sql.Tx, m M) error {
		first, err := Mark(ctx, tx, consumer, id(m), o.now())
		if err != nil || !first {
			return err
		}
		return h(ctx, tx, m)
	}, nil
}

// Stats describes the table.
type Stats struct {
	Rows int64
	// Oldest is the time of the oldest mark (zero if there is none).
	Oldest time.Time
}

// ReadStats counts the marks of every consumer.
func ReadStats(ctx context.Context, q Querier) (Stats, error) {
	var s Stats
	var oldest sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT count(*), min(seen_at) FROM esraft_dedup`).Scan(&s.Rows, &oldest)
	if err != nil {
		return Stats{}, dbErr("stats", err)
	}
	if oldest.Valid {
		s.Oldest = time.UnixMilli(oldest.Int64)
	}
	return s, nil
}
