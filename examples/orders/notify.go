package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/outbox"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
)

// Notifications: a consumer group handles OrderPaid and OrderShipped on
// whichever node owns the partition, and writes one outgoing message per
// event to the outbox in the same SQLite transaction as its dedup mark; a
// relay on each node delivers the messages at least once, with their
// stable ID in the Idempotency-Key header.

type notifications struct {
	group *projection.Group
	relay *outbox.Relay
	db    *sqlite.DB
	pub   *jsonlPublisher
	// outage is this node's drill switch (drills.go): while on, the
	// handler fails on drill events.
	outage atomic.Bool
	// handled counts the events the handler returned nil for since the
	// process started, redeliveries included (which dedup makes no-ops).
	handled atomic.Int64
}

func (n *notifications) close() {
	n.relay.Close()
	n.db.Close()
	if n.pub != nil {
		n.pub.close()
	}
}

// notification is the body each webhook receives.
type notification struct {
	OrderID string    `json:"order_id,omitempty"`
	Drill   string    `json:"drill,omitempty"` // a drill event's stream (drills.go)
	Event   string    `json:"event"`
	Version uint64    `json:"version"`
	At      time.Time `json:"at"`
}

func startNotifications(ctx context.Context, store *eventstore.Store, cfg config, log *slog.Logger) (*notifications, error) {
	db, err := sqlite.Open(ctx, filepath.Join(cfg.data, "notify"), dedup.Schema, outbox.Schema)
	if err != nil {
		return nil, err
	}
	n := &notifications{db: db}
	var pub outbox.Publisher
	if cfg.notifyURL != "" {
		if pub, err = outbox.NewWebhook(cfg.notifyURL, outbox.WithTimeout(5*time.Second)); err != nil {
			db.Close()
			return nil, err
		}
	} else {
		if n.pub, err = openJSONL(filepath.Join(cfg.data, "notifications.jsonl")); err != nil {
			db.Close()
			return nil, err
		}
		pub = n.pub
	}
	n.relay, err = outbox.NewRelay(db.WriteDB(), outbox.Config{
		Publisher: pub, PollInterval: 200 * time.Millisecond, MaxBackoff: 10 * time.Second, Logger: log,
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := n.relay.Start(ctx); err != nil {
		db.Close()
		return nil, err
	}
	notify := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		msg, kind := notification{OrderID: orderID(ev.Stream), Event: ev.Type, Version: ev.Version, At: ev.Time}, "order."
		if ev.Type == drillEventType {
			if n.outage.Load() {
				return errDrillOutage
			}
			msg, kind = notification{Drill: ev.Stream, Event: ev.Type, Version: ev.Version, At: ev.Time}, "drill."
		}
		body, err := json.Marshal(msg)
		if err != nil {
			return err
		}
		_, err = outbox.Enqueue(ctx, tx, "notifier", ev.ID, outbox.Message{
			Key: ev.Stream, Type: kind + ev.Type, Payload: body,
		})
		return err
	}
	// The dedup mark makes a redelivered event (after a member crash) a
	// no-op in this node's database; the outbox's stable IDs cover a
	// redelivery to another node.
	h, err := dedup.Wrap("notifier", func(ev eventstore.Event) string { return ev.ID.String() }, notify)
	if err != nil {
		n.close()
		return nil, err
	}
	counted := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		err := h(ctx, tx, ev)
		if err == nil {
			n.handled.Add(1)
		}
		return err
	}
	member := store.Log().NodeID()
	n.group = projection.NewGroup(store, "notifier", member, counted, projection.GroupOptions{
		Options: projection.Options{Categories: []string{"order", "drill"}, EventTypes: []string{"OrderPaid", "OrderShipped", drillEventType},
			Logger: log},
		SessionTimeout: 5 * time.Second,
		DB:             db,
	})
	return n, nil
}

// jsonlPublisher appends each message as a JSON line to a file, fsynced:
// the default destination when no webhook is configured.
type jsonlPublisher struct {
	mu sync.Mutex
	f  *os.File
}

// openJSONL opens the file for appending, readable by its owner only: the
// messages name customers' orders. A file left readable to others by an
// earlier version is narrowed to 0600 too.
func openJSONL(path string) (*jsonlPublisher, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("notifications file: %w", err)
	}
	return &jsonlPublisher{f: f}, nil
}

func (p *jsonlPublisher) Publish(ctx context.Context, m outbox.Message) error {
	line, err := json.Marshal(map[string]any{"idempotency_key": m.ID, "type": m.Type, "key": m.Key, "body": json.RawMessage(m.Payload)})
	if err != nil {
		return outbox.Permanent(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("notifications file: %w", err)
	}
	return p.f.Sync()
}

func (p *jsonlPublisher) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.f.Sync(), p.f.Close())
}
