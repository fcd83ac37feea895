package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/schema"
)

// routes is the HTTP API. Any node accepts any call: writes go through
// the log to its leader, reads are served by this node.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", a.placeOrder)
	mux.HandleFunc("POST /orders/{id}/pay", a.command(func(r *http.Request) (aggregate.Command[Order], error) {
		var body struct {
			AmountCents int64 `json:"amount_cents"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return nil, err
		}
		return Pay(body.AmountCents), nil
	}))
	mux.HandleFunc("POST /orders/{id}/ship", a.command(func(*http.Request) (aggregate.Command[Order], error) { return Ship(), nil }))
	mux.HandleFunc("POST /orders/{id}/cancel", a.command(func(*http.Request) (aggregate.Command[Order], error) { return Cancel(), nil }))
	mux.HandleFunc("GET /orders/{id}", a.getOrder)
	mux.HandleFunc("GET /views/orders/{id}", a.viewOrder)
	mux.HandleFunc("GET /views/orders", a.listOrders)
	mux.HandleFunc("GET /views/stats", a.viewStats)
	// The operations API (package admin): /admin/..., /metrics,
	// /healthz, /readyz, and its web console under /ui/.
	for _, path := range []string{"/admin/", "/metrics", "/healthz", "/readyz", "/ui/"} {
		mux.Handle(path, a.admin)
	}
	mux.HandleFunc("GET /status", a.status)
	mux.Handle("/registry/", http.StripPrefix("/registry", a.registry()))
	return limitBody(maxBodyBytes, mux)
}

// registry serves the schema registry's Confluent-compatible API under
// /registry (a client's base URL is http://host/registry). Reads are open;
// registering a schema or changing a compatibility mode changes what
// every node accepts, so they need the admin token.
func (a *app) registry() http.Handler {
	h := schema.Handler(a.schemas)
	admin := a.protect(h.ServeHTTP)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		changes := r.Method == http.MethodPut || (r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/subjects/"))
		if changes {
			admin(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// maxBodyBytes is the largest request body read: 1 MiB.
const maxBodyBytes = 1 << 20

// limitBody makes reading a body past max fail (and decodeJSON answer
// 413) instead of reading on: the server closes the connection rather
// than consume the rest.
func limitBody(max int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, max)
		h.ServeHTTP(w, r)
	})
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// decodeJSON decodes one JSON object, rejecting unknown fields and
// trailing data; an empty body is an empty object. A body over the limit
// is a 413.
func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is over the limit of %d bytes", tooLarge.Limit)}
	}
	if err != nil {
		return badRequest("read body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON: data after the object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeError maps errors to status codes.
func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	var ie *InvalidError
	code := http.StatusInternalServerError
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.As(err, &ie):
		code = http.StatusBadRequest
	case errors.Is(err, aggregate.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrVersionMismatch):
		code = http.StatusPreconditionFailed
	case isRuleViolation(err), errors.Is(err, aggregate.ErrAlreadyExists), errors.Is(err, aggregate.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, eventstore.ErrUnavailable), errors.Is(err, eventstore.ErrUnknownOutcome), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

type placeRequest struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	Items    []Item `json:"items"`
}

func (p *placeRequest) validate() error {
	if p.ID != "" {
		if err := ValidateOrderID(p.ID); err != nil {
			return err
		}
	}
	return ValidatePlace(p.Customer, p.Items)
}

// placeOrder creates an order. With an Idempotency-Key, a retry of the
// same request gets the same result (see idempotency.go): the key names
// the order (unless the body does) and is recorded as the events'
// correlation ID.
func (a *app) placeOrder(w http.ResponseWriter, r *http.Request) {
	var req placeRequest
	if err := decodeJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKeyLen {
		writeError(w, badRequest("Idempotency-Key must be at most %d characters", maxIdempotencyKeyLen))
		return
	}
	ctx := r.Context()
	// Decide on the latest state, whichever node took the last writes.
	if err := a.store.Barrier(ctx); err != nil {
		writeError(w, err)
		return
	}
	id := req.ID
	if key != "" {
		var err error
		if id, err = a.claimIdempotencyKey(ctx, key, req); err != nil {
			writeError(w, err)
			return
		}
		ctx = aggregate.WithCorrelationID(ctx, "idem:"+key)
	} else if id == "" {
		id = uuid.Must(uuid.NewV7()).String()
	}
	agg, err := a.orders.Create(ctx, id, Place(req.Customer, req.Items))
	if errors.Is(err, aggregate.ErrAlreadyExists) && key != "" {
		// A retry of the request that created it gets its result again.
		first, rerr := a.store.ReadStream(ctx, "order-"+id, 1, 1)
		if rerr == nil && len(first) == 1 && first[0].Metadata.CorrelationID == "idem:"+key {
			writeJSON(w, http.StatusCreated, map[string]any{"id": id, "version": first[0].Version})
			return
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "version": agg.Version})
}

// command runs an order command from a request, honouring If-Match.
func (a *app) command(parse func(*http.Request) (aggregate.Command[Order], error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ifMatch uint64
		if h := r.Header.Get("If-Match"); h != "" {
			v, err := strconv.ParseUint(strings.Trim(h, `"`), 10, 64)
			if err != nil || v == 0 {
				writeError(w, badRequest("If-Match must be a positive version number"))
				return
			}
			ifMatch = v
		}
		id, err := pathOrderID(r)
		if err != nil {
			writeError(w, err)
			return
		}
		cmd, err := parse(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if err := a.store.Barrier(r.Context()); err != nil {
			writeError(w, err)
			return
		}
		agg, err := a.orders.Update(r.Context(), id, expect(ifMatch, cmd))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"version": agg.Version})
	}
}

// pathOrderID is the request's {id}, checked like an order ID in a body.
func pathOrderID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	return id, ValidateOrderID(id)
}

func (a *app) getOrder(w http.ResponseWriter, r *http.Request) {
	id, err := pathOrderID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	// The aggregate's current state: every write acknowledged before this
	// request, on any node.
	if err := a.store.Barrier(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	agg, err := a.orders.Load(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": agg.ID, "customer": agg.State.Customer, "status": agg.State.Status,
		"total_cents": agg.State.TotalCents, "paid_cents": agg.State.PaidCents, "version": agg.Version,
	})
}

func (a *app) viewOrder(w http.ResponseWriter, r *http.Request) {
	id, err := pathOrderID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rows, err := queryOrders(r.Context(), a.ordersDB, "WHERE id = ?", id)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(rows) == 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order in this node's view"})
		return
	}
	writeJSON(w, http.StatusOK, rows[0])
}

func (a *app) listOrders(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 1000 {
			writeError(w, badRequest("limit must be between 1 and 1000"))
			return
		}
		limit = n
	}
	where, args := "", []any{}
	if st := r.URL.Query().Get("status"); st != "" {
		switch st {
		case "placed", "paid", "shipped", "cancelled":
		default:
			writeError(w, badRequest("status must be placed, paid, shipped or cancelled"))
			return
		}
		where, args = "WHERE status = ?", append(args, st)
	}
	rows, err := queryOrders(r.Context(), a.ordersDB, where+" ORDER BY id LIMIT ?", append(args, limit)...)
	if err != nil {
		writeError(w, err)
		return
	}
	if rows == nil {
		rows = []orderView{}
	}
	writeJSON(w, http.StatusOK, rows)
}

func (a *app) viewStats(w http.ResponseWriter, r *http.Request) {
	s, err := queryStats(r.Context(), a.statsDB)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (a *app) status(w http.ResponseWriter, r *http.Request) {
	ls := a.store.Log().Status()
	type shard struct {
		Shard    int    `json:"shard"`
		State    string `json:"state"`
		Leader   string `json:"leader"`
		Term     uint64 `json:"term"`
		Applied  uint64 `json:"applied_index"`
		Commit   uint64 `json:"commit_index"`
		LastLogI uint64 `json:"last_index"`
	}
	type member struct {
		ID    string `json:"id"`
		Addr  string `json:"addr"`
		Voter bool   `json:"voter"`
	}
	out := map[string]any{"node": ls.NodeID, "addr": ls.Addr}
	var shards []shard
	var members []member
	for _, g := range ls.Shards {
		shards = append(shards, shard{int(g.Shard), g.State, g.LeaderID, g.Term, g.AppliedIndex, g.CommitIndex, g.LastIndex})
		if g.Shard == 0 {
			for _, s := range g.Servers {
				members = append(members, member{s.ID, s.Addr, s.Voter})
			}
		}
	}
	out["shards"], out["members"] = shards, members
	heads := map[string]uint64{}
	for p := range eventstore.Partition(a.store.Partitions()) {
		h, _ := a.store.Head(p)
		heads[strconv.Itoa(int(p))] = h
	}
	out["partition_heads"] = heads
	projs := map[string]projection.Status{}
	for name, p := range a.projections {
		projs[name] = p.Status()
	}
	if a.notifier != nil {
		projs["notifier"] = a.notifier.Status()
		if gs, ok := a.notifier.Assignment(); ok {
			assign := map[string]any{"generation": gs.Generation}
			owners := map[string]string{}
			for _, p := range gs.Partitions {
				owners[strconv.Itoa(int(p.Partition))] = p.Owner
			}
			assign["owners"] = owners
			var ids []string
			for _, m := range gs.Members {
				ids = append(ids, m.ID)
			}
			assign["members"] = ids
			out["consumer_group"] = assign
		}
	}
	out["projections"] = projs
	writeJSON(w, http.StatusOK, out)
}
