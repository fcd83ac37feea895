package main

import (
	"errors"
	"fmt"
	"math"

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

// InvalidError is a command's input that no order may hold, whatever its
// state (HTTP 400): Field names the input as the API spells it.
type InvalidError struct {
	Field  string // "id", "customer", "items[2].qty", "amount_cents"
	Reason string // "must be positive"
}

func (e *InvalidError) Error() string { return e.Field + " " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Order IDs are 1 to maxOrderIDLen ASCII letters, digits, '-', '_' and
// '.', starting with a letter or a digit: safe in a URL path, a stream
// name and a log line as they are.
const maxOrderIDLen = 128

// ValidateOrderID checks an order ID against that character set.
func ValidateOrderID(id string) error {
	const rule = "must be 1 to 128 characters: ASCII letters, digits, '-', '_' and '.', starting with a letter or a digit"
	if id == "" || len(id) > maxOrderIDLen {
		return invalid("id", rule)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '-' && c != '_' && c != '.') {
			return invalid("id", rule)
		}
	}
	return nil
}

// orderTotal is the sum of qty × price_cents over the items, in checked
// int64 arithmetic: an order whose total does not fit is refused, as is
// an item with a quantity or a price that is not positive (the total
// must be a positive amount that can be paid).
func orderTotal(items []Item) (int64, error) {
	if len(items) == 0 {
		return 0, invalid("items", "must not be empty")
	}
	var total int64
	for i, it := range items {
		field := fmt.Sprintf("items[%d]", i)
		switch {
		case it.SKU == "":
			return 0, invalid(field+".sku", "is required")
		case it.Qty <= 0:
			return 0, invalid(field+".qty", "must be positive")
		case it.PriceCents <= 0:
			return 0, invalid(field+".price_cents", "must be positive")
		}
		line, ok := mulCents(it.Qty, it.PriceCents)
		if !ok {
			return 0, invalid(field, "is too large: qty × price_cents is over %d cents", int64(math.MaxInt64))
		}
		if total, ok = addCents(total, line); !ok {
			return 0, invalid("items", "total too large: the sum of qty × price_cents is over %d cents", int64(math.MaxInt64))
		}
	}
	return total, nil
}

// addCents is a + b, and false if that overflows an int64.
func addCents(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}

// mulCents is a × b for positive a and b, and false if that overflows an
// int64.
func mulCents(a, b int64) (int64, bool) {
	if a > math.MaxInt64/b {
		return 0, false
	}
	return a * b, true
}

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

// ValidatePlace reports, as an *InvalidError, input Place refuses; a
// caller checks it before doing any work on the request's behalf.
func ValidatePlace(customer string, items []Item) error {
	_, err := placeTotal(customer, items)
	return err
}

func placeTotal(customer string, items []Item) (int64, error) {
	if customer == "" {
		return 0, invalid("customer", "is required")
	}
	return orderTotal(items)
}

// Place starts an order; its total is computed in checked arithmetic,
// and input no order may hold is an *InvalidError.
func Place(customer string, items []Item) aggregate.Command[Order] {
	return func(Order) ([]any, error) {
		total, err := placeTotal(customer, items)
		if err != nil {
			return nil, err
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
		case amount <= 0:
			return nil, invalid("amount_cents", "must be positive")
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
