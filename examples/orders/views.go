package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
)

// Two local projections: every node keeps its own SQLite read models,
// fed from the log, rebuilt by replay on request.
//
// The sums of cents in the views are checked: an event that would take
// one out of the int64 range (SQLite would turn it into a REAL, and every
// later read of the view would fail) is refused with errSumOverflow. The
// runner parks it after its retries, so the view leaves that event (and
// the later events of its order) out, keeps serving, and counts it under
// "parked" in /status. The commands refuse such amounts since the check
// was added; this guards against events from before it, or appended by
// other writers. A view that already holds a REAL from before the check
// is mended by a rebuild (POST /admin/projections/<name>/rebuild).

// errSumOverflow: an event would take a view's sum of cents out of the
// int64 range.
var errSumOverflow = errors.New("sum of cents out of the int64 range; the event is left out of the view")

// addToSum adds by to the INTEGER column col of the row that where
// selects in table, failing with errSumOverflow rather than overflow. A
// missing row is left alone, as an UPDATE would.
func addToSum(ctx context.Context, tx *sql.Tx, table, col, where string, by int64, args ...any) error {
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT `+col+` FROM `+table+` WHERE `+where, args...).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	sum, ok := addCents(cur, by)
	if !ok {
		return fmt.Errorf("%w: %s.%s is %d, the event adds %d", errSumOverflow, table, col, cur, by)
	}
	_, err = projection.Exec(ctx, tx, `UPDATE `+table+` SET `+col+` = ? WHERE `+where, append([]any{sum}, args...)...)
	return err
}

// The orders view: one row per order.
var ordersSchema = []string{`
CREATE TABLE orders (
	id          TEXT PRIMARY KEY,
	customer    TEXT NOT NULL,
	status      TEXT NOT NULL,
	total_cents INTEGER NOT NULL,
	paid_cents  INTEGER NOT NULL,
	version     INTEGER NOT NULL
);
CREATE INDEX orders_by_status ON orders (status, id);`}

func orderID(stream string) string { return strings.TrimPrefix(stream, "order-") }

// ordersHandler keeps the orders view.
func ordersHandler(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	id := orderID(ev.Stream)
	switch ev.Type {
	case "OrderPlaced":
		var e OrderPlaced
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		_, err := projection.Exec(ctx, tx, `INSERT INTO orders (id, customer, status, total_cents, paid_cents, version)
			VALUES (?, ?, 'placed', ?, 0, ?)`, id, e.Customer, e.TotalCents, ev.Version)
		return err
	case "OrderPaid":
		var e OrderPaid
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		if err := addToSum(ctx, tx, "orders", "paid_cents", "id = ?", e.AmountCents, id); err != nil {
			return err
		}
		_, err := projection.Exec(ctx, tx, `UPDATE orders SET status = 'paid', version = ? WHERE id = ?`, ev.Version, id)
		return err
	case "OrderShipped":
		_, err := projection.Exec(ctx, tx, `UPDATE orders SET status = 'shipped', version = ? WHERE id = ?`, ev.Version, id)
		return err
	case "OrderCancelled":
		_, err := projection.Exec(ctx, tx, `UPDATE orders SET status = 'cancelled', version = ? WHERE id = ?`, ev.Version, id)
		return err
	}
	return nil
}

// The stats view: counters over all orders.
var statsSchema = []string{`
CREATE TABLE stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO stats (name, value) VALUES ('orders', 0), ('paid', 0), ('shipped', 0), ('cancelled', 0), ('revenue_cents', 0);`}

func statsHandler(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
	bump := func(name string, by int64) error {
		return addToSum(ctx, tx, "stats", "value", "name = ?", by, name)
	}
	switch ev.Type {
	case "OrderPlaced":
		return bump("orders", 1)
	case "OrderPaid":
		var e OrderPaid
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		if err := bump("paid", 1); err != nil {
			return err
		}
		return bump("revenue_cents", e.AmountCents)
	case "OrderShipped":
		return bump("shipped", 1)
	case "OrderCancelled":
		return bump("cancelled", 1)
	}
	return nil
}

// orderView is a row of the orders view.
type orderView struct {
	ID         string `json:"id"`
	Customer   string `json:"customer"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
	PaidCents  int64  `json:"paid_cents"`
	Version    uint64 `json:"version"`
}

func queryOrders(ctx context.Context, db *sqlite.DB, where string, args ...any) ([]orderView, error) {
	var out []orderView
	err := db.View(ctx, func(d *sql.DB) error {
		rows, err := d.QueryContext(ctx, `SELECT id, customer, status, total_cents, paid_cents, version FROM orders `+where, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var o orderView
			if err := rows.Scan(&o.ID, &o.Customer, &o.Status, &o.TotalCents, &o.PaidCents, &o.Version); err != nil {
				return err
			}
			out = append(out, o)
		}
		return rows.Err()
	})
	return out, err
}

// statsView is the stats read model.
type statsView struct {
	Orders       int64 `json:"orders"`
	Paid         int64 `json:"paid"`
	Shipped      int64 `json:"shipped"`
	Cancelled    int64 `json:"cancelled"`
	RevenueCents int64 `json:"revenue_cents"`
}

func queryStats(ctx context.Context, db *sqlite.DB) (statsView, error) {
	var s statsView
	err := db.View(ctx, func(d *sql.DB) error {
		rows, err := d.QueryContext(ctx, `SELECT name, value FROM stats`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var v int64
			if err := rows.Scan(&name, &v); err != nil {
				return err
			}
			switch name {
			case "orders":
				s.Orders = v
			case "paid":
				s.Paid = v
			case "shipped":
				s.Shipped = v
			case "cancelled":
				s.Cancelled = v
			case "revenue_cents":
				s.RevenueCents = v
			}
		}
		return rows.Err()
	})
	return s, err
}
