package outbox_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/internal/sqlitex"
	"github.com/esraft/esraft/outbox"
)

// appSchema is a handler's own database: its state, an effects table with
// no unique constraint (so that a duplicate side effect would show), and
// the dedup and outbox tables.
var appSchema = sqlitex.Migration(`
CREATE TABLE account (id TEXT PRIMARY KEY, total INTEGER NOT NULL);
CREATE TABLE effect (event_id TEXT NOT NULL);
` + dedup.Schema + outbox.Schema)

func openApp(t testing.TB, path string) *sqlitex.DB {
	t.Helper()
	db, err := sqlitex.Open(context.Background(), path, appSchema)
	require.NoError(t, err)
	return db
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// delivery is one message as a receiver saw it.
type delivery struct {
	ID      uuid.UUID
	Key     string
	Type    string
	Payload string
	Attempt int
}

// sink is the outside world: it survives crashes and keeps every
// delivery. fail, when set, decides whether a publish fails (before
// anything reaches the receiver).
type sink struct {
	mu         sync.Mutex
	deliveries []delivery
	fail       func(m outbox.Message) error
}

func (s *sink) Publish(ctx context.Context, m outbox.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(m); err != nil {
			return err
		}
	}
	s.deliveries = append(s.deliveries, delivery{ID: m.ID, Key: m.Key, Type: m.Type, Payload: string(m.Payload), Attempt: m.Attempt})
	return nil
}

func (s *sink) all() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivery(nil), s.deliveries...)
}

// update runs fn in a write transaction.
func update(t testing.TB, db *sqlitex.DB, fn func(tx *sql.Tx) error) {
	t.Helper()
	require.NoError(t, db.Update(context.Background(), fn))
}
