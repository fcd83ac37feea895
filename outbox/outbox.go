package outbox

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Errors returned by the package. Errors that wrap a database failure keep
// it in the chain.
var (
	// ErrEmptyHandler: Enqueue without a handler name.
	ErrEmptyHandler = errors.New("outbox: empty handler name")
	// ErrNilSource: Enqueue with the zero UUID as source, which would give
	// the messages of different events the same IDs.
	ErrNilSource = errors.New("outbox: nil source id")
	// ErrEmptyKey: a message without a key.
	ErrEmptyKey = errors.New("outbox: empty message key")
	// ErrEmptyType: a message without a type.
	ErrEmptyType = errors.New("outbox: empty message type")
	// ErrNoMessages: Enqueue with no messages.
	ErrNoMessages = errors.New("outbox: no messages")
	// ErrDuplicateID: two messages of one Enqueue with the same ID.
	ErrDuplicateID = errors.New("outbox: duplicate message id in one enqueue")
	// ErrIDConflict: a pending message already has this ID with a
	// different key, type or payload: Enqueue was called twice for one
	// source and handler with different messages (give each call its own
	// handler name, or set Message.ID).
	ErrIDConflict = errors.New("outbox: message id already used for another message")
	// ErrNotFound: no pending or parked message has this ID.
	ErrNotFound = errors.New("outbox: message not found")
	// ErrNotParked: the message is pending, not parked.
	ErrNotParked = errors.New("outbox: message not parked")
	// ErrNoPublisher: a Config without a Publisher.
	ErrNoPublisher = errors.New("outbox: no publisher")
	// ErrBadConfig: a Config with a negative or inconsistent setting.
	ErrBadConfig = errors.New("outbox: bad config")
	// ErrNoSchema: the database has no outbox tables; run Migrate.
	ErrNoSchema = errors.New("outbox: tables missing (run outbox.Migrate)")
	// ErrBadURL: a webhook URL that is not absolute http or https.
	ErrBadURL = errors.New("outbox: webhook url must be absolute http or https")
	// ErrClosed: the relay was closed.
	ErrClosed = errors.New("outbox: relay closed")
)

// Schema creates the outbox tables; it is idempotent, so it can run on
// every start or sit in your own migrations.
//
// esraft_outbox holds the messages not yet published (pending, retrying or
// parked), in enqueue order (seq). Times are Unix milliseconds; next_at is
// when a failed message may be tried again, parked_at is set once it is
// parked. esraft_outbox_done remembers the IDs of published (or
// discarded) messages for DoneRetention, so that reprocessing an event
// does not enqueue them again.
const Schema = `
CREATE TABLE IF NOT EXISTS esraft_outbox (
	seq        INTEGER PRIMARY KEY,
	id         TEXT    NOT NULL UNIQUE,
	key        TEXT    NOT NULL,
	type       TEXT    NOT NULL,
	payload    BLOB,
	headers    TEXT,
	source     TEXT    NOT NULL,
	handler    TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_at    INTEGER NOT NULL DEFAULT 0,
	parked_at  INTEGER,
	last_error TEXT
);
CREATE INDEX IF NOT EXISTS esraft_outbox_failing ON esraft_outbox (key) WHERE attempts > 0;
CREATE TABLE IF NOT EXISTS esraft_outbox_done (
	id        TEXT    PRIMARY KEY,
	done_at   INTEGER NOT NULL,
	discarded INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS esraft_outbox_done_at ON esraft_outbox_done (done_at);
`

// Execer runs a statement: *sql.DB, *sql.Tx and *sql.Conn are Execers.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Tx is what Enqueue needs of the handler's transaction (*sql.Tx).
type Tx interface {
	Execer
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ Tx     = (*sql.Tx)(nil)
	_ Execer = (*sql.DB)(nil)
)

// Migrate runs Schema on db (use the writing connection).
func Migrate(ctx context.Context, db Execer) error {
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return dbErr("create tables", err)
	}
	return nil
}

func dbErr(op string, err error) error {
	if strings.Contains(err.Error(), "no such table") {
		return fmt.Errorf("%w: %s: %w", ErrNoSchema, op, err)
	}
	return fmt.Errorf("outbox: %s: %w", op, err)
}

// Message is an outgoing message.
type Message struct {
	// ID is the message's stable ID. Enqueue sets it to MessageID(source,
	// handler, n) unless it is already set.
	ID uuid.UUID
	// Key orders messages: those with one key are published in enqueue
	// order. LogPublisher appends to the stream named Key.
	Key string
	// Type names the message ("InvoiceRequested"); required.
	Type    string
	Payload []byte
	// Headers travel with the message (event metadata headers for the log,
	// HTTP headers for a webhook).
	Headers map[string]string

	// Set by the outbox when the message is published:

	// Source is the event (or message) whose handling produced it.
	Source uuid.UUID
	// Handler is the name of the handler that produced it.
	Handler string
	// Attempt counts publishes of this message, from 1; it is more than 1
	// on retries.
	Attempt int
	// Enqueued is when the handler's transaction wrote it.
	Enqueued time.Time
}

// namespace is the UUIDv5 namespace of message IDs; never change it, or
// reprocessed events get new IDs.
var namespace = uuid.MustParse("fa986923-0624-40ac-ac6c-8ec076f524f2")

// MessageID is the ID of the n-th (from 0) message that handler enqueues
// while handling source: a UUIDv5 of the three, the same on every node and
// on every reprocessing.
func MessageID(source uuid.UUID, handler string, n int) uuid.UUID {
	b := make([]byte, 0, 16+len(handler)+12)
	b = append(b, source[:]...)
	b = append(b, handler...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(n), 10)
	return uuid.NewSHA1(namespace, b)
}

// Enqueue writes msgs to the outbox in tx, the transaction of the
// handler's state change, and returns their IDs. The n-th message (from 0)
// gets the ID MessageID(source, handler, n) unless its ID is set, so call
// Enqueue once per source event and handler (or use distinct handler
// names per call). A message whose ID is already pending, or was published
// within DoneRetention, is not written again: reprocessing an event is
// harmless.
//
// Errors: ErrEmptyHandler, ErrNilSource, ErrNoMessages, ErrEmptyKey,
// ErrEmptyType, ErrDuplicateID (nothing written); ErrIDConflict;
// ErrNoSchema. On an error, roll tx back.
func Enqueue(ctx context.Context, tx Tx, handler string, source uuid.UUID, msgs ...Message) ([]uuid.UUID, error) {
	switch {
	case handler == "":
		return nil, ErrEmptyHandler
	case source == uuid.Nil:
		return nil, ErrNilSource
	case len(msgs) == 0:
		return nil, ErrNoMessages
	}
	ids := make([]uuid.UUID, len(msgs))
	seen := make(map[uuid.UUID]struct{}, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.Key == "":
			return nil, fmt.Errorf("%w: message %d", ErrEmptyKey, i)
		case m.Type == "":
			return nil, fmt.Errorf("%w: message %d", ErrEmptyType, i)
		}
		ids[i] = m.ID
		if ids[i] == uuid.Nil {
			ids[i] = MessageID(source, handler, i)
		}
		if _, dup := seen[ids[i]]; dup {
			return nil, fmt.Errorf("%w: %s", ErrDuplicateID, ids[i])
		}
		seen[ids[i]] = struct{}{}
	}
	now := time.Now().UnixMilli()
	for i := range msgs {
		m := &msgs[i]
		var headers sql.NullString
		if len(m.Headers) > 0 {
			b, err := json.Marshal(m.Headers)
			if err != nil {
				return nil, fmt.Errorf("outbox: message %d headers: %w", i, err)
			}
			headers = sql.NullString{String: string(b), Valid: true}
		}
		id := ids[i].String()
		res, err := tx.ExecContext(ctx,
			`INSERT INTO esraft_outbox (id, key, type, payload, headers, source, handler, created_at)
			 SELECT ?, ?, ?, ?, ?, ?, ?, ?
			 WHERE NOT EXISTS (SELECT 1 FROM esraft_outbox_done WHERE id = ?)
			 ON CONFLICT (id) DO NOTHING`,
			id, m.Key, m.Type, m.Payload, headers, source.String(), handler, now, id)
		if err != nil {
			return nil, dbErr("enqueue", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, dbErr("enqueue", err)
		}
		if n == 0 {
			if err := checkSame(ctx, tx, id, m); err != nil {
				return nil, err
			}
		}
	}
	return ids, nil
}

// checkSame reports ErrIDConflict if the pending message id differs from m.
func checkSame(ctx context.Context, tx Tx, id string, m *Message) error {
	var key, typ string
	var payload []byte
	err := tx.QueryRowContext(ctx, `SELECT key, type, payload FROM esraft_outbox WHERE id = ?`, id).Scan(&key, &typ, &payload)
	switch {
	case errors.Is(err, sql.ErrNoRows): // published before: dropped, as it should be
		return nil
	case err != nil:
		return dbErr("enqueue", err)
	case key != m.Key || typ != m.Type || !bytes.Equal(payload, m.Payload):
		return fmt.Errorf("%w: %s is pending as %s for key %q", ErrIDConflict, id, typ, key)
	}
	return nil
}

// Parked is a message the relay gave up on.
type Parked struct {
	Message
	// Attempts is how often it was tried; LastError is the last failure.
	Attempts  int
	LastError string
	ParkedAt  time.Time
}

// ListParked returns up to limit parked messages, oldest first.
func ListParked(ctx context.Context, db *sql.DB, limit int) ([]Parked, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.QueryContext(ctx,
		`SELECT id, key, type, payload, headers, source, handler, created_at, attempts, last_error, parked_at
		 FROM esraft_outbox WHERE attempts > 0 AND parked_at IS NOT NULL ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, dbErr("list parked", err)
	}
	defer rows.Close()
	var out []Parked
	for rows.Next() {
		var p Parked
		var r row
		var lastErr sql.NullString
		var parkedAt int64
		if err := rows.Scan(&r.id, &r.key, &r.typ, &r.payload, &r.headers, &r.source, &r.handler, &r.created,
			&p.Attempts, &lastErr, &parkedAt); err != nil {
			return nil, dbErr("list parked", err)
		}
		m, err := r.message()
		if err != nil {
			return nil, err
		}
		p.Message, p.LastError, p.ParkedAt = m, lastErr.String, time.UnixMilli(parkedAt)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("list parked", err)
	}
	return out, nil
}

// Retry makes a parked message pending again, with a fresh attempt count;
// the relay publishes it on its next round (call Relay.Notify to make
// that now). Errors: ErrNotFound, ErrNotParked.
func Retry(ctx context.Context, db *sql.DB, id uuid.UUID) error {
	return changeParked(ctx, db, id, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE esraft_outbox SET attempts = 0, next_at = 0, parked_at = NULL WHERE id = ?`, id.String())
		return err
	})
}

// Discard gives up on a parked message for good: it is removed, remembered
// as done (so reprocessing its event does not enqueue it again), and the
// later messages of its key move on. Errors: ErrNotFound, ErrNotParked.
func Discard(ctx context.Context, db *sql.DB, id uuid.UUID) error {
	return changeParked(ctx, db, id, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO esraft_outbox_done (id, done_at, discarded) VALUES (?, ?, 1) ON CONFLICT (id) DO NOTHING`,
			id.String(), time.Now().UnixMilli())
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM esraft_outbox WHERE id = ?`, id.String())
		return err
	})
}

func changeParked(ctx context.Context, db *sql.DB, id uuid.UUID, change func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr("begin", err)
	}
	defer tx.Rollback()
	var parked sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT parked_at FROM esraft_outbox WHERE id = ?`, id.String()).Scan(&parked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	case err != nil:
		return dbErr("find parked", err)
	case !parked.Valid:
		return fmt.Errorf("%w: %s", ErrNotParked, id)
	}
	if err := change(tx); err != nil {
		return dbErr("change parked", err)
	}
	if err := tx.Commit(); err != nil {
		return dbErr("commit", err)
	}
	return nil
}

// Pending counts the messages not yet published, parked ones included.
func Pending(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM esraft_outbox`).Scan(&n); err != nil {
		return 0, dbErr("count", err)
	}
	return n, nil
}

// Counts are the messages of an outbox not yet published, by state.
type Counts struct {
	// Pending are the messages the relay still tries (new or retrying);
	// Parked those it gave up on (ListParked).
	Pending, Parked int64
}

// ReadCounts counts the messages not yet published in one query over
// esraft_outbox, which holds only those (published ones move to the
// done table), so its cost follows the backlog, not the history.
func ReadCounts(ctx context.Context, db *sql.DB) (Counts, error) {
	var total, parked int64
	if err := db.QueryRowContext(ctx, `SELECT count(*), count(parked_at) FROM esraft_outbox`).Scan(&total, &parked); err != nil {
		return Counts{}, dbErr("count", err)
	}
	return Counts{Pending: total - parked, Parked: parked}, nil
}

// PruneDone forgets the IDs of messages published or discarded before
// before, in batches; the relay calls it on its own. It returns how many
// it forgot.
func PruneDone(ctx context.Context, db *sql.DB, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := db.ExecContext(ctx,
			`DELETE FROM esraft_outbox_done WHERE id IN (
				SELECT id FROM esraft_outbox_done WHERE done_at < ? LIMIT 1000)`, before.UnixMilli())
		if err != nil {
			return total, dbErr("prune done", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, dbErr("prune done", err)
		}
		total += n
		if n < 1000 {
			return total, nil
		}
	}
}

// row is a message as stored.
type row struct {
	seq                           int64
	id, key, typ, source, handler string
	payload                       []byte
	headers                       sql.NullString
	created                       int64
	attempts                      int
}

func (r *row) message() (Message, error) {
	id, err := uuid.Parse(r.id)
	if err != nil {
		return Message{}, fmt.Errorf("outbox: message %q has a bad id: %w", r.id, err)
	}
	src, err := uuid.Parse(r.source)
	if err != nil {
		return Message{}, fmt.Errorf("outbox: message %s has a bad source %q: %w", r.id, r.source, err)
	}
	m := Message{
		ID: id, Key: r.key, Type: r.typ, Payload: r.payload, Source: src, Handler: r.handler,
		Attempt: r.attempts + 1, Enqueued: time.UnixMilli(r.created),
	}
	if r.headers.Valid {
		if err := json.Unmarshal([]byte(r.headers.String), &m.Headers); err != nil {
			return Message{}, fmt.Errorf("outbox: message %s has bad headers: %w", r.id, err)
		}
	}
	return m, nil
}
