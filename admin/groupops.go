package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
)

// ResetRequest is the body of POST /admin/groups/{group}/reset: where to
// move every partition of a stopped group, or, with Force, of a group
// whatever its members.
type ResetRequest struct {
	// To is "earliest" (replay everything), "latest" (skip to the heads),
	// "time" (the first event at or after Time) or "offsets" (partition p
	// to Offsets[p]).
	To      string     `json:"to"`
	Time    *time.Time `json:"time,omitempty"`    // RFC 3339; with "time" only
	Offsets []uint64   `json:"offsets,omitempty"` // one per partition; with "offsets" only
	// Force resets a group that has live members too, fencing them: they
	// are removed from the group in the same operation, their next commit
	// is refused (stale generation), and they join again and resume from
	// the new offsets. Without it such a reset is a 409 group_active.
	Force bool `json:"force,omitempty"`
}

// start checks the request against a log of the given number of
// partitions and returns the position it names.
func (r ResetRequest) start(partitions int) (eventstore.StartPosition, error) {
	if r.To != "time" && r.Time != nil {
		return eventstore.StartPosition{}, fmt.Errorf(`"time" goes only with "to": "time"`)
	}
	if r.To != "offsets" && r.Offsets != nil {
		return eventstore.StartPosition{}, fmt.Errorf(`"offsets" goes only with "to": "offsets"`)
	}
	switch r.To {
	case "earliest":
		return eventstore.StartPosition{Kind: eventstore.StartEarliest}, nil
	case "latest":
		return eventstore.StartPosition{Kind: eventstore.StartLatest}, nil
	case "time":
		if r.Time == nil {
			return eventstore.StartPosition{}, fmt.Errorf(`"to": "time" needs "time" (RFC 3339)`)
		}
		return eventstore.StartPosition{Kind: eventstore.StartAtTime, Time: *r.Time}, nil
	case "offsets":
		if len(r.Offsets) != partitions {
			return eventstore.StartPosition{}, fmt.Errorf(`"offsets" has %d offset(s); the log has %d partitions: give one per partition`, len(r.Offsets), partitions)
		}
		return eventstore.StartPosition{Kind: eventstore.StartAtOffsets, Offsets: r.Offsets}, nil
	case "":
		return eventstore.StartPosition{}, fmt.Errorf(`"to" is required: earliest, latest, time or offsets`)
	}
	return eventstore.StartPosition{}, fmt.Errorf(`"to": %q is not earliest, latest, time or offsets`, r.To)
}

// GroupActiveError is the 409 answer of a reset or delete refused because
// the group has live members.
type GroupActiveError struct {
	Error   string   `json:"error"`
	Code    string   `json:"code"` // "group_active"
	Members []string `json:"members"`
}

// GroupDeleted is the answer of DELETE /admin/groups/{group}.
type GroupDeleted struct {
	Group  string `json:"group"`
	Action string `json:"action"` // "deleted"
}

// resetGroup moves a stopped group's committed offsets and answers the
// group as it is after the reset.
func (h *Handler) resetGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("group")
	var req ResetRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	start, err := req.start(h.cfg.Store.Partitions())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "request body: "+err.Error())
		return
	}
	reset := h.cfg.Store.ResetGroup
	if req.Force {
		reset = h.cfg.Store.ForceResetGroup
	}
	st, err := reset(r.Context(), name, start)
	switch {
	case errors.Is(err, eventstore.ErrUnknownGroup):
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("consumer group %q does not exist", name))
	case err != nil:
		h.writeGroupOpError(w, "reset", name, err)
	default:
		writeJSON(w, http.StatusOK, h.groupOf(name, st))
	}
}

// deleteGroup removes a stopped group. A group this node does not know,
// once it has applied every write acknowledged before the request, is a
// 404.
func (h *Handler) deleteGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("group")
	if err := h.cfg.Store.Barrier(r.Context()); err != nil {
		h.writeStoreError(w, err)
		return
	}
	_, ok, err := h.cfg.Store.GroupState(name)
	switch {
	case err != nil:
		h.writeGroupOpError(w, "delete", name, err)
		return
	case !ok:
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("consumer group %q does not exist", name))
		return
	}
	if err := h.cfg.Store.DeleteGroup(r.Context(), name); err != nil {
		h.writeGroupOpError(w, "delete", name, err)
		return
	}
	writeJSON(w, http.StatusOK, GroupDeleted{Group: name, Action: "deleted"})
}

// writeGroupOpError answers a failed reset or delete: a 409 naming the
// live members, a 400 for a position the log refuses (an offset beyond a
// partition's end, a bad group name), or the store's error.
func (h *Handler) writeGroupOpError(w http.ResponseWriter, op, name string, err error) {
	switch {
	case errors.Is(err, eventstore.ErrGroupActive):
		var members []string
		if st, ok, _ := h.cfg.Store.GroupState(name); ok {
			for _, m := range st.Members {
				members = append(members, m.ID)
			}
		}
		msg := fmt.Sprintf("consumer group %q has live members (%s): stop them, or wait for their sessions to expire, then %s it again", name, strings.Join(members, ", "), op)
		if op == "reset" {
			msg += `; or force the reset (esraft groups reset --force, "force": true), which fences them: they join again and resume from the new offsets`
		}
		if len(members) == 0 {
			// This node has not applied the joins yet; the log's own
			// refusal names them.
			msg = fmt.Sprintf("%s refused: %v", op, err)
			members = []string{}
		}
		writeJSON(w, http.StatusConflict, GroupActiveError{Error: msg, Code: "group_active", Members: members})
	case errors.Is(err, raftlog.ErrConfig):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	default:
		h.writeStoreError(w, err)
	}
}
