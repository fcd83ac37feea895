package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
)

// StreamList is the answer of GET /admin/streams: a page of streams in
// listing order (shorter names first, then bytewise). Next, if set, is
// the after= of the next page.
type StreamList struct {
	Streams []StreamEntry `json:"streams"`
	Next    string        `json:"next,omitempty"`
}

// StreamEntry is one listed stream.
type StreamEntry struct {
	Stream    string `json:"stream"`
	Partition int    `json:"partition"`
	Version   uint64 `json:"version"`
	Deleted   bool   `json:"deleted"`
}

// StreamInfo is the answer of GET /admin/streams/{stream}.
type StreamInfo struct {
	Stream    string `json:"stream"`
	Partition int    `json:"partition"`
	Version   uint64 `json:"version"`
	// FirstVersion is the lowest version a read returns (above 1 once
	// truncated, version+1 once deleted).
	FirstVersion uint64 `json:"first_version"`
	Deleted      bool   `json:"deleted"`
}

// Event is an event in a read.
type Event struct {
	ID            uuid.UUID         `json:"id"`
	Stream        string            `json:"stream"`
	Type          string            `json:"type"`
	Version       uint64            `json:"version"`
	Partition     int               `json:"partition"`
	Offset        uint64            `json:"offset"`
	Time          time.Time         `json:"time"`
	Data          json.RawMessage   `json:"data,omitempty"`
	DataBase64    []byte            `json:"data_base64,omitempty"` // data that is not JSON
	CorrelationID string            `json:"correlation_id,omitempty"`
	CausationID   string            `json:"causation_id,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	// Unreadable says why an event has no data: its key was shredded
	// (eventstore.Encrypt).
	Unreadable string `json:"unreadable,omitempty"`
}

// EventPage is the answer of a read: the events and where to go on.
type EventPage struct {
	Events []Event `json:"events"`
	// Next is the from= of the next page: a version for a stream read
	// (0 when a backward read reached the start), an offset for a
	// partition read.
	Next uint64 `json:"next"`
}

func toEvent(e eventstore.Event) Event {
	out := Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Version: e.Version, Partition: int(e.Partition), Offset: e.Offset,
		Time: e.Time, CorrelationID: e.Metadata.CorrelationID, CausationID: e.Metadata.CausationID, Headers: e.Metadata.Headers}
	switch {
	case e.Unreadable != nil:
		out.Unreadable = e.Unreadable.Error()
	case json.Valid(e.Data):
		out.Data = e.Data
	default:
		out.DataBase64 = e.Data
	}
	return out
}

// maxPage bounds every listing and read.
const maxPage = 1000

func (h *Handler) listStreams(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := queryLimit(r, 100, maxPage)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	opt := eventstore.ListStreamsOptions{Prefix: q.Get("prefix"), Category: q.Get("category"), After: q.Get("after"), Limit: limit}
	if opt.Prefix != "" && opt.Category != "" {
		writeError(w, http.StatusBadRequest, "bad_request", "give prefix or category, not both")
		return
	}
	page, err := h.cfg.Store.ListStreams(r.Context(), opt)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := StreamList{Streams: make([]StreamEntry, 0, len(page))}
	for _, s := range page {
		out.Streams = append(out.Streams, StreamEntry{Stream: s.Stream, Partition: int(s.Partition), Version: s.Version, Deleted: s.Deleted})
	}
	if len(page) == limit {
		out.Next = page[len(page)-1].Stream
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) streamInfo(w http.ResponseWriter, r *http.Request) {
	info, err := h.cfg.Store.Stream(r.Context(), r.PathValue("stream"))
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	if info.Version == 0 {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("stream %q has no events", info.Stream))
		return
	}
	writeJSON(w, http.StatusOK, StreamInfo{Stream: info.Stream, Partition: int(info.Partition), Version: info.Version, FirstVersion: info.First, Deleted: info.Deleted})
}

// readStream serves GET /admin/streams/{stream}/events?from=&limit=&direction=forward|backward.
// A backward read from 0 starts at the last event.
func (h *Handler) readStream(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	from, err := queryUint(r, "from", 0)
	var limit int
	if err == nil {
		limit, err = queryLimit(r, 100, maxPage)
	}
	dir := r.URL.Query().Get("direction")
	if err == nil && dir != "" && dir != "forward" && dir != "backward" {
		err = fmt.Errorf("direction=%q: use forward or backward", dir)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	var evs []eventstore.Event
	if dir == "backward" {
		if from == 0 {
			info, err := h.cfg.Store.Stream(r.Context(), stream)
			if err != nil {
				h.writeStoreError(w, err)
				return
			}
			from = info.Version
		}
		evs, err = h.cfg.Store.ReadStreamBackward(r.Context(), stream, from, limit)
	} else {
		evs, err = h.cfg.Store.ReadStream(r.Context(), stream, from, limit)
	}
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := EventPage{Events: make([]Event, 0, len(evs))}
	for _, e := range evs {
		out.Events = append(out.Events, toEvent(e))
	}
	if n := len(evs); n > 0 {
		if dir == "backward" {
			out.Next = evs[n-1].Version - 1
		} else {
			out.Next = evs[n-1].Version + 1
		}
	} else if dir != "backward" {
		out.Next = from
	}
	writeJSON(w, http.StatusOK, out)
}

// eventByID serves GET /admin/events/{id}: the event with that ID, found
// through the log's record ID index, which holds an ID as long as the log
// deduplicates it (raftlog.Config.IDRetention, 24 h by default). The
// console links correlation and causation IDs through it.
func (h *Handler) eventByID(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("event ID %q is not a UUID", r.PathValue("id")))
		return
	}
	p, off, found, err := h.raftLog().LocateID(id)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	if found {
		var evs []eventstore.Event
		evs, _, err = h.cfg.Store.ReadPartition(r.Context(), eventstore.Partition(p), off, 1)
		if err != nil {
			h.writeStoreError(w, err)
			return
		}
		if len(evs) == 1 && evs[0].ID == id {
			writeJSON(w, http.StatusOK, toEvent(evs[0]))
			return
		}
	}
	// Not indexed, or indexed but no longer readable (its stream was
	// deleted or truncated).
	writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no event %s on this node: event IDs are found for as long as the log deduplicates them (24 h by default), and an erased event is gone", id))
}

// expected reads the expected_version query parameter: absent is any.
func expected(r *http.Request) (eventstore.ExpectedVersion, error) {
	if r.URL.Query().Get("expected_version") == "" {
		return eventstore.Any, nil
	}
	v, err := queryUint(r, "expected_version", 0)
	if err != nil {
		return eventstore.Any, err
	}
	return eventstore.Exact(v), nil
}

// StreamChange is the answer of a delete or truncation.
type StreamChange struct {
	Stream string `json:"stream"`
	Action string `json:"action"` // "deleted" or "truncated"
	Before uint64 `json:"before,omitempty"`
}

func (h *Handler) deleteStream(w http.ResponseWriter, r *http.Request) {
	exp, err := expected(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	stream := r.PathValue("stream")
	if _, err := h.cfg.Store.DeleteStream(r.Context(), stream, exp); err != nil {
		h.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, StreamChange{Stream: stream, Action: "deleted"})
}

// TruncateRequest is the body of POST /admin/streams/{stream}/truncate:
// events below version Before are hidden and erased.
type TruncateRequest struct {
	Before          uint64  `json:"before"`
	ExpectedVersion *uint64 `json:"expected_version,omitempty"`
}

func (h *Handler) truncateStream(w http.ResponseWriter, r *http.Request) {
	var req TruncateRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.Before < 2 {
		writeError(w, http.StatusBadRequest, "bad_request", `"before" must be a version of 2 or more: events below it are erased`)
		return
	}
	exp := eventstore.Any
	if req.ExpectedVersion != nil {
		exp = eventstore.Exact(*req.ExpectedVersion)
	}
	stream := r.PathValue("stream")
	if _, err := h.cfg.Store.TruncateStream(r.Context(), stream, req.Before, exp); err != nil {
		h.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, StreamChange{Stream: stream, Action: "truncated", Before: req.Before})
}

// PartitionList is the answer of GET /admin/partitions.
type PartitionList struct {
	Partitions []PartitionStatus `json:"partitions"`
}

func (h *Handler) partitions(w http.ResponseWriter, r *http.Request) {
	out := PartitionList{Partitions: []PartitionStatus{}}
	for _, p := range h.raftLog().Status().Partitions {
		out.Partitions = append(out.Partitions, PartitionStatus{Partition: int(p.Partition), Shard: int(p.Shard), NextOffset: p.NextOffset})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) readPartition(w http.ResponseWriter, r *http.Request) {
	p, err := h.partitionParam(r)
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	from, err := queryUint(r, "from", 0)
	var limit int
	if err == nil {
		limit, err = queryLimit(r, 100, maxPage)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	evs, next, err := h.cfg.Store.ReadPartition(r.Context(), p, from, limit)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := EventPage{Events: make([]Event, 0, len(evs)), Next: next}
	for _, e := range evs {
		out.Events = append(out.Events, toEvent(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// Tail timings: how long a write to a tailing client may take, and how
// often an idle stream gets a comment line (so proxies and the client
// see it alive).
const (
	tailWriteTimeout = 30 * time.Second
	tailKeepAlive    = 15 * time.Second
	tailBatch        = 100
)

// tailPartition streams a partition's events from ?from= (default: its
// head now) as server-sent events: "event: event", "id: <offset>",
// "data: <Event JSON>" (see tail).
func (h *Handler) tailPartition(w http.ResponseWriter, r *http.Request) {
	p, err := h.partitionParam(r)
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	head, err := h.cfg.Store.Head(p)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	from, err := queryUint(r, "from", head)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	h.tail(w, r, p, from, nil)
}

// tailStream streams a stream's events from ?from= (a version; default:
// the stream's next version now, so new events only) as server-sent
// events with the stream's version as their id. Events up to the
// stream's end are read from the stream, then the stream's partition is
// followed from the head it had before that read (or from the first event
// not read, past tailBatch events), skipping what was already sent: no
// event is missed or sent twice in between.
func (h *Handler) tailStream(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	p := h.cfg.Store.PartitionOf(stream)
	head, err := h.cfg.Store.Head(p)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	info, err := h.cfg.Store.Stream(r.Context(), stream)
	if err != nil && !errors.Is(err, eventstore.ErrStreamDeleted) {
		h.writeStoreError(w, err)
		return
	}
	from, err := queryUint(r, "from", info.Version+1)
	if err != nil || from == 0 {
		if err == nil {
			err = errors.New("query parameter from=0: versions start at 1")
		}
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	// At most tailBatch events of history are read here; if there are
	// more, the partition is followed from the first event not read
	// instead of from head, so the history is never held in memory.
	var backlog []eventstore.Event
	if from <= info.Version {
		backlog, err = h.cfg.Store.ReadStream(r.Context(), stream, from, tailBatch)
		if err != nil {
			h.writeStoreError(w, err)
			return
		}
	}
	if n := len(backlog); n > 0 && backlog[n-1].Version < info.Version {
		head = backlog[n-1].Offset + 1
	}
	want := from
	h.tail(w, r, p, head, func(e eventstore.Event) bool {
		if e.Stream != stream || e.Version < want {
			return false
		}
		want = e.Version + 1
		return true
	}, backlog...)
}

// tail streams partition p from offset from as server-sent events: first
// backlog, then the partition's events that keep says to send (all with
// keep nil), each with its offset as id, or its stream version when keep
// is set. It is woken by the log's apply path, never by polling, and
// reads at most tailBatch events at a time, so a slow client holds no
// more than that in memory; the write deadline drops a client that stops
// reading.
func (h *Handler) tail(w http.ResponseWriter, r *http.Request, p eventstore.Partition, from uint64,
	keep func(eventstore.Event) bool, backlog ...eventstore.Event) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	send := func(e eventstore.Event) error {
		id := e.Offset
		if keep != nil {
			if !keep(e) {
				return nil
			}
			id = e.Version
		}
		_, err := fmt.Fprintf(w, "event: event\nid: %d\ndata: %s\n\n", id, mustJSON(toEvent(e)))
		return err
	}
	rc.SetWriteDeadline(time.Now().Add(tailWriteTimeout))
	for _, e := range backlog {
		if err := send(e); err != nil {
			return
		}
	}
	for {
		rc.SetWriteDeadline(time.Now().Add(tailWriteTimeout))
		evs, next, err := h.cfg.Store.ReadPartition(ctx, p, from, tailBatch)
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(Error{Error: err.Error(), Code: "read_failed"}))
				rc.Flush()
			}
			return
		}
		for _, e := range evs {
			if err := send(e); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		from = next
		if len(evs) > 0 {
			continue
		}
		if err := h.waitOrKeepAlive(ctx, w, rc, p, from); err != nil {
			return
		}
	}
}

// waitOrKeepAlive waits until partition p holds offset from, writing a
// comment line every tailKeepAlive meanwhile.
func (h *Handler) waitOrKeepAlive(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, p eventstore.Partition, from uint64) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, tailKeepAlive)
		err := h.raftLog().Wait(wctx, p, from)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		rc.SetWriteDeadline(time.Now().Add(tailWriteTimeout))
		if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(Error{Error: err.Error(), Code: "internal"})
	}
	return b
}
