package admin

import (
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/esraft/esraft/eventstore"
)

// RetentionRequest is the body of PUT /admin/streams/{stream}/retention
// and PUT /admin/categories/{category}/retention: events older than
// max_age_ms, all but the newest max_count, and those below version
// truncate_before are hidden (0: no limit; all three 0 removes the
// setting).
type RetentionRequest struct {
	MaxAgeMS       int64  `json:"max_age_ms"`
	MaxCount       uint64 `json:"max_count"`
	TruncateBefore uint64 `json:"truncate_before"`
}

// Retention is the answer of those calls: the setting in force.
type Retention struct {
	Stream   string `json:"stream,omitempty"`
	Category string `json:"category,omitempty"`
	RetentionRequest
}

func (h *Handler) setStreamRetention(w http.ResponseWriter, r *http.Request) {
	h.setRetention(w, r, false)
}

func (h *Handler) setCategoryRetention(w http.ResponseWriter, r *http.Request) {
	h.setRetention(w, r, true)
}

func (h *Handler) setRetention(w http.ResponseWriter, r *http.Request, category bool) {
	var req RetentionRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	set := eventstore.StreamRetention{MaxAge: time.Duration(req.MaxAgeMS) * time.Millisecond, MaxCount: req.MaxCount, TruncateBefore: req.TruncateBefore}
	out := Retention{RetentionRequest: req}
	var err error
	if category {
		out.Category = r.PathValue("category")
		err = h.cfg.Store.SetCategoryRetention(r.Context(), out.Category, set)
	} else {
		out.Stream = r.PathValue("stream")
		err = h.cfg.Store.SetStreamRetention(r.Context(), out.Stream, set)
	}
	if errors.Is(err, eventstore.ErrInvalidRetention) {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// ScavengeResult is the answer of POST /admin/scavenge.
type ScavengeResult struct {
	// Truncated lists the partitions whose low offset the scavenge raised:
	// their events below low_offset are gone on every node.
	Truncated []Truncation `json:"truncated"`
	// SegmentsRemoved and BytesFreed count what this node gave back.
	SegmentsRemoved int   `json:"segments_removed"`
	BytesFreed      int64 `json:"bytes_freed"`
}

// Truncation is one partition's new low offset.
type Truncation struct {
	Partition int    `json:"partition"`
	LowOffset uint64 `json:"low_offset"`
}

func (h *Handler) scavenge(w http.ResponseWriter, r *http.Request) {
	res, err := h.raftLog().Scavenge(r.Context())
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := ScavengeResult{Truncated: []Truncation{}, SegmentsRemoved: res.Segments, BytesFreed: res.Bytes}
	for p, low := range res.Truncated {
		out.Truncated = append(out.Truncated, Truncation{Partition: int(p), LowOffset: low})
	}
	sort.Slice(out.Truncated, func(i, j int) bool { return out.Truncated[i].Partition < out.Truncated[j].Partition })
	writeJSON(w, http.StatusOK, out)
}
