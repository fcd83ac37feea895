package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
)

// GroupList is the answer of GET /admin/groups.
type GroupList struct {
	Groups []GroupSummary `json:"groups"`
}

// GroupSummary is one consumer group in a list.
type GroupSummary struct {
	Group      string `json:"group"`
	Generation uint64 `json:"generation"`
	Members    int    `json:"members"`
	Lag        uint64 `json:"lag"`
	Parked     int    `json:"parked"`
}

// Group is the answer of GET /admin/groups/{group} (the group as this
// node has applied it) and of POST /admin/groups/{group}/reset (the group
// as the reset left it), with its lag against this node's heads.
type Group struct {
	Group      string           `json:"group"`
	Generation uint64           `json:"generation"`
	Members    []GroupMember    `json:"members"`
	Partitions []GroupPartition `json:"partitions"`
	Lag        uint64           `json:"lag"`
	Parked     int              `json:"parked"`
	Skipped    uint64           `json:"skipped"` // parked events an operator skipped
}

// GroupMember is a live member of a group.
type GroupMember struct {
	ID               string    `json:"id"`
	SessionTimeoutMS int64     `json:"session_timeout_ms"`
	LastSeen         time.Time `json:"last_seen"`
	Partitions       []int     `json:"partitions"` // those it owns
}

// GroupPartition is one partition of a group.
type GroupPartition struct {
	Partition  int    `json:"partition"`
	Owner      string `json:"owner"`
	Generation uint64 `json:"generation"` // of the owner's grant
	Next       string `json:"next,omitempty"`
	Committed  uint64 `json:"committed"`
	Head       uint64 `json:"head"`
	Lag        uint64 `json:"lag"`
	Parked     int    `json:"parked"`
	Skipped    uint64 `json:"skipped"`
}

func (h *Handler) group(name string) (Group, bool, error) {
	st, ok, err := h.cfg.Store.GroupState(name)
	if err != nil || !ok {
		return Group{}, ok, err
	}
	return h.groupOf(name, st), true, nil
}

// groupOf is the answer form of st, with its lag against this node's
// heads.
func (h *Handler) groupOf(name string, st eventstore.ConsumerGroupState) Group {
	lags := h.raftLog().Lag(st)
	g := Group{Group: name, Generation: st.Generation, Members: []GroupMember{}, Partitions: []GroupPartition{}}
	owned := map[string][]int{}
	for i, a := range st.Partitions {
		gp := GroupPartition{Partition: int(a.Partition), Owner: a.Owner, Generation: a.Generation, Committed: a.Committed, Parked: len(a.Parked), Skipped: a.Skipped}
		if a.Revoking() {
			gp.Next = a.Next
		}
		if i < len(lags) {
			gp.Lag = lags[i]
		}
		gp.Head = a.Committed + gp.Lag
		g.Lag += gp.Lag
		g.Parked += gp.Parked
		g.Skipped += gp.Skipped
		g.Partitions = append(g.Partitions, gp)
		if a.Owner != "" {
			owned[a.Owner] = append(owned[a.Owner], int(a.Partition))
		}
	}
	for _, m := range st.Members {
		g.Members = append(g.Members, GroupMember{ID: m.ID, SessionTimeoutMS: m.SessionTimeout.Milliseconds(), LastSeen: m.LastSeen, Partitions: append([]int{}, owned[m.ID]...)})
	}
	return g
}

func (h *Handler) listGroups(w http.ResponseWriter, r *http.Request) {
	names, err := h.raftLog().GroupNames()
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := GroupList{Groups: []GroupSummary{}}
	for _, n := range names {
		g, ok, err := h.group(n)
		if err != nil {
			h.writeStoreError(w, err)
			return
		}
		if ok {
			out.Groups = append(out.Groups, GroupSummary{Group: n, Generation: g.Generation, Members: len(g.Members), Lag: g.Lag, Parked: g.Parked})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) describeGroup(w http.ResponseWriter, r *http.Request) {
	g, ok, err := h.group(r.PathValue("group"))
	switch {
	case err != nil:
		h.writeStoreError(w, err)
	case !ok:
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("consumer group %q does not exist", r.PathValue("group")))
	default:
		writeJSON(w, http.StatusOK, g)
	}
}

// ParkedList is the answer of a parked list.
type ParkedList struct {
	Parked []Parked `json:"parked"`
}

// Parked is an event set aside after failing.
type Parked struct {
	Partition int    `json:"partition"`
	Offset    uint64 `json:"offset"`
	Stream    string `json:"stream"`
	Error     string `json:"error"`
	Attempts  int    `json:"attempts"`
	// Retrying: a retry was asked and the owner has not handled it yet
	// (consumer groups only).
	Retrying bool `json:"retrying,omitempty"`
	// Skipping: a skip was asked and the owner has not dropped it yet
	// (consumer groups only).
	Skipping bool `json:"skipping,omitempty"`
}

func (h *Handler) groupParked(w http.ResponseWriter, r *http.Request) {
	st, ok, err := h.cfg.Store.GroupState(r.PathValue("group"))
	switch {
	case err != nil:
		h.writeStoreError(w, err)
		return
	case !ok:
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("consumer group %q does not exist", r.PathValue("group")))
		return
	}
	out := ParkedList{Parked: []Parked{}}
	for _, a := range st.Partitions {
		for _, pr := range a.Parked {
			out.Parked = append(out.Parked, Parked{Partition: int(a.Partition), Offset: pr.Offset, Stream: pr.Key, Error: pr.Error, Attempts: pr.Attempts, Retrying: pr.Retry, Skipping: pr.Skip})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Retry is the answer of a parked retry or skip.
type Retry struct {
	Partition int    `json:"partition"`
	Offset    uint64 `json:"offset"`
	// Action is "retry_requested" or "skip_requested" (groups: the
	// partition's owner carries it out at its next heartbeat), "retried"
	// or "skipped" (projections: done).
	Action string `json:"action"`
	// Remaining is how many events stay parked in the projection after
	// the retry or skip (projections only).
	Remaining *int `json:"remaining,omitempty"`
}

func (h *Handler) retryGroupParked(w http.ResponseWriter, r *http.Request) {
	h.groupParkedAction(w, r, "retry_requested", h.cfg.Store.RetryParked)
}

// skipGroupParked asks the owner to drop a parked event unhandled.
func (h *Handler) skipGroupParked(w http.ResponseWriter, r *http.Request) {
	h.groupParkedAction(w, r, "skip_requested", h.cfg.Store.SkipParked)
}

// groupParkedAction asks of the group in the path what act does to the
// parked event in the path, answering a 404 if the group has none there
// once this node has applied every write acknowledged before the request
// (the event may have been parked, and listed, through another node).
func (h *Handler) groupParkedAction(w http.ResponseWriter, r *http.Request, action string,
	act func(ctx context.Context, group string, partition eventstore.Partition, offset uint64) error) {
	name := r.PathValue("group")
	p, off, ok := h.parkedParams(w, r)
	if !ok {
		return
	}
	if err := h.cfg.Store.Barrier(r.Context()); err != nil {
		h.writeStoreError(w, err)
		return
	}
	st, ok, err := h.cfg.Store.GroupState(name)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	parked := false
	for _, a := range st.Partitions {
		for _, pr := range a.Parked {
			parked = parked || (a.Partition == p && pr.Offset == off)
		}
	}
	if !ok || !parked {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("consumer group %q has no parked event at partition %d offset %d", name, p, off))
		return
	}
	if err := act(r.Context(), name, p, off); err != nil {
		h.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Retry{Partition: int(p), Offset: off, Action: action})
}

// ProjectionList is the answer of GET /admin/projections.
type ProjectionList struct {
	Projections []Projection `json:"projections"`
}

// Projection is a local projection's state on this node.
type Projection struct {
	projection.Status
	Rebuild *RebuildProgress `json:"rebuild,omitempty"`
	// LastRebuild is how the last rebuild that ended on this node went:
	// its progress as of its end (100 % for one that switched to the new
	// read model) and its error, if any.
	LastRebuild *RebuildResult `json:"last_rebuild,omitempty"`
}

// RebuildResult is a rebuild that ended.
type RebuildResult struct {
	Replayed uint64    `json:"replayed"`
	Total    uint64    `json:"total"`
	Percent  float64   `json:"percent"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended"`
	Error    string    `json:"error,omitempty"`
}

// RebuildProgress is a running rebuild's progress.
type RebuildProgress struct {
	Replayed uint64    `json:"replayed"`
	Total    uint64    `json:"total"`
	Percent  float64   `json:"percent"`
	Started  time.Time `json:"started"`
	// Rate is events replayed per second since the start; ETASeconds the
	// time left at that rate (absent until it is known).
	Rate       float64  `json:"rate"`
	ETASeconds *float64 `json:"eta_seconds,omitempty"`
}

// percentOf is replayed of total in percent (100 of nothing).
func percentOf(replayed, total uint64) float64 {
	if total == 0 {
		return 100
	}
	return min(100, 100*float64(replayed)/float64(total))
}

func projectionOf(st projection.Status, now time.Time) Projection {
	out := Projection{Status: st}
	if rb := st.Rebuild; rb != nil {
		p := &RebuildProgress{Replayed: rb.Replayed, Total: rb.Total, Started: rb.Started, Percent: percentOf(rb.Replayed, rb.Total)}
		if el := now.Sub(rb.Started).Seconds(); el > 0 {
			p.Rate = float64(rb.Replayed) / el
		}
		if p.Rate > 0 && rb.Total >= rb.Replayed {
			eta := float64(rb.Total-rb.Replayed) / p.Rate
			p.ETASeconds = &eta
		}
		out.Rebuild = p
	}
	if lr := st.LastRebuild; lr != nil {
		out.LastRebuild = &RebuildResult{Replayed: lr.Replayed, Total: lr.Total, Percent: percentOf(lr.Replayed, lr.Total),
			Started: lr.Started, Ended: lr.Ended, Error: lr.Error}
	}
	out.Status.Rebuild, out.Status.LastRebuild = nil, nil
	return out
}

func (h *Handler) projectionNames() []string {
	names := make([]string, 0, len(h.cfg.Projections))
	for n := range h.cfg.Projections {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (h *Handler) listProjections(w http.ResponseWriter, r *http.Request) {
	out := ProjectionList{Projections: []Projection{}}
	now := time.Now()
	for _, n := range h.projectionNames() {
		out.Projections = append(out.Projections, projectionOf(h.cfg.Projections[n].Status(), now))
	}
	writeJSON(w, http.StatusOK, out)
}

// projectionParam is the local projection the path names, or a 404.
func (h *Handler) projectionParam(w http.ResponseWriter, r *http.Request) (*projection.Local, bool) {
	p, ok := h.cfg.Projections[r.PathValue("name")]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no projection %q on this node (it has %v)", r.PathValue("name"), h.projectionNames()))
	}
	return p, ok
}

func (h *Handler) projectionStatus(w http.ResponseWriter, r *http.Request) {
	if p, ok := h.projectionParam(w, r); ok {
		writeJSON(w, http.StatusOK, projectionOf(p.Status(), time.Now()))
	}
}

func (h *Handler) rebuild(w http.ResponseWriter, r *http.Request) {
	p, ok := h.projectionParam(w, r)
	if !ok {
		return
	}
	// The rebuild outlives the request: it runs until the service stops.
	if err := p.Rebuild(h.cfg.Context); err != nil {
		if errors.Is(err, projection.ErrRebuildRunning) {
			writeError(w, http.StatusConflict, "rebuild_running", err.Error())
			return
		}
		h.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, projectionOf(p.Status(), time.Now()))
}

func (h *Handler) projectionParked(w http.ResponseWriter, r *http.Request) {
	p, ok := h.projectionParam(w, r)
	if !ok {
		return
	}
	evs, err := p.Parked(r.Context())
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := ParkedList{Parked: []Parked{}}
	for _, e := range evs {
		out.Parked = append(out.Parked, Parked{Partition: int(e.Partition), Offset: e.Offset, Stream: e.Stream, Error: e.Error, Attempts: e.Attempts})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) retryProjectionParked(w http.ResponseWriter, r *http.Request) {
	h.projectionParkedAction(w, r, "retried", (*projection.Local).Retry)
}

// skipProjectionParked drops a parked event of a local projection
// unhandled.
func (h *Handler) skipProjectionParked(w http.ResponseWriter, r *http.Request) {
	h.projectionParkedAction(w, r, "skipped", (*projection.Local).Skip)
}

// projectionParkedAction does act to the parked event in the path of the
// local projection in the path.
func (h *Handler) projectionParkedAction(w http.ResponseWriter, r *http.Request, action string,
	act func(p *projection.Local, ctx context.Context, partition eventstore.Partition, offset uint64) error) {
	p, ok := h.projectionParam(w, r)
	if !ok {
		return
	}
	part, off, ok := h.parkedParams(w, r)
	if !ok {
		return
	}
	if err := act(p, r.Context(), part, off); err != nil {
		switch {
		case errors.Is(err, projection.ErrNotParked):
			writeError(w, http.StatusNotFound, "not_found", err.Error())
		case errors.Is(err, projection.ErrNotRunning):
			writeError(w, http.StatusServiceUnavailable, "not_running", err.Error())
		default:
			h.writeStoreError(w, err)
		}
		return
	}
	evs, err := p.Parked(r.Context())
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	n := len(evs)
	writeJSON(w, http.StatusOK, Retry{Partition: int(part), Offset: off, Action: action, Remaining: &n})
}

// parkedParams reads the partition and offset of a parked event from the
// path, answering a 404 or 400 if they are not valid.
func (h *Handler) parkedParams(w http.ResponseWriter, r *http.Request) (eventstore.Partition, uint64, bool) {
	p, err := h.partitionParam(r)
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return 0, 0, false
	}
	off, err := pathUint(r, "offset")
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return 0, 0, false
	}
	return p, off, true
}
