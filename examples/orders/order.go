package main

import (
	"errors"
	"fmt"

	"github.com/esraft/esraft/aggregate"
)

// The Order aggregate: plain Go state, one struct per event, and commands
// that check the rules and decide events.

// Order is the state of an order, rebuilt from its events.
type Order struct {
	Customer   string
	Items      []Item
	Status     string // placed, paid, shipped, cancelled
	TotalCents int64
	PaidCents  int64
	// Version counts the events applied, so a command can check an
	// If-Match precondition against the exact state it decides on.
	Version uint64
}

// Item is a line of an order.
type Item struct {
	SKU        string `json:"sku"`
	Qty        int64  `json:"qty"`
	PriceCents int64  `json:"price_cents"`
}

// Events.
type (
	OrderPlaced struct {
		Customer   string `json:"customer"`
		Items      []Item `json:"items"`
		TotalCents int64  `json:"total_cents"`
	}
	OrderPaid struct {
		AmountCents int64 `json:"amount_cents"`
	}
	OrderShipped   struct{}
	OrderCancelled struct{}
)

// Domain rule violations (HTTP 409).
var (
	ErrAlreadyPaid      = errors.New("the order is already paid")
	ErrNotPayable       = errors.New("only a placed order can be paid")
	ErrWrongAmount      = errors.New("the amount must equal the order total")
	ErrNotPaid          = errors.New("an order ships only once paid")
	ErrAlreadyShipped   = errors.New("the order is already shipped")
	ErrAlreadyCancelled = errors.New("the order is already cancelled")
	ErrShippedNoCancel  = errors.New("a shipped order cannot be cancelled")
)

// ErrVersionMismatch: an If-Match precondition failed (HTTP 412).
var ErrVersionMismatch = errors.New("the order is not at the expected version")

// orders declares the aggregate type: streams "order-<id>", a snapshot
// every 50 events, and how each event changes the state.
func orders() *aggregate.Type[Order] {
	t := aggregate.NewType[Order]("order", aggregate.SnapshotEvery(50))
	aggregate.On(t, "OrderPlaced", func(o *Order, e OrderPlaced) {
		o.Customer, o.Items, o.TotalCents, o.Status = e.Customer, e.Items, e.TotalCents, "placed"
		o.Version++
	})
	aggregate.On(t, "OrderPaid", func(o *Order, e OrderPaid) {
		o.PaidCents += e.AmountCents
		o.Status = "paid"
		o.Version++
	})
	aggregate.On(t, "OrderShipped", func(o *Order, _ OrderShipped) { o.Status = "shipped"; o.Version++ })
	aggregate.On(t, "OrderCancelled", func(o *Order, _ OrderCancelled) { o.Status = "cancelled"; o.Version++ })
	return t
}

// Place starts an order. Input is validated by the HTTP layer.
func Place(customer string, items []Item) aggregate.Command[Order] {
	return func(Order) ([]any, error) {
		var total int64
		for _, it := range items {
			total += it.Qty * it.PriceCents
		}
		return []any{OrderPlaced{Customer: customer, Items: items, TotalCents: total}}, nil
	}
}

// expect wraps a command with an If-Match precondition (0: none).
func expect(version uint64, cmd aggregate.Command[Order]) aggregate.Command[Order] {
	return func(o Order) ([]any, error) {
		if version != 0 && o.Version != version {
			return nil, fmt.Errorf("%w: it is at version %d, If-Match says %d", ErrVersionMismatch, o.Version, version)
		}
		return cmd(o)
	}
}

// Pay pays the order in full.
func Pay(amount int64) aggregate.Command[Order] {
	return func(o Order) ([]any, error) {
		switch {
		case o.Status == "paid" || o.Status == "shipped":
			return nil, ErrAlreadyPaid
		case o.Status != "placed":
			return nil, ErrNotPayable
		case amount != o.TotalCents:
			return nil, fmt.Errorf("%w (%d cents)", ErrWrongAmount, o.TotalCents)
		}
		return []any{OrderPaid{AmountCents: amount}}, nil
	}
}

// Ship ships a paid order.
func Ship() aggregate.Command[Order] {
	return func(o Order) ([]any, error) {
		switch o.Status {
		case "shipped":
			return nil, ErrAlreadyShipped
		case "cancelled":
			return nil, ErrAlreadyCancelled
		case "paid":
			return []any{OrderShipped{}}, nil
		}
		return nil, ErrNotPaid
	}
}

// Cancel cancels an order not yet shipped.
func Cancel() aggregate.Command[Order] {
	return func(o Order) ([]any, error) {
		switch o.Status {
		case "shipped":
			return nil, ErrShippedNoCancel
		case "cancelled":
			return nil, ErrAlreadyCancelled
		}
		return []any{OrderCancelled{}}, nil
	}
}

// isRuleViolation reports the domain's own refusals.
func isRuleViolation(err error) bool {
	for _, e := range []error{ErrAlreadyPaid, ErrNotPayable, ErrWrongAmount, ErrNotPaid, ErrAlreadyShipped, ErrAlreadyCancelled, ErrShippedNoCancel} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
