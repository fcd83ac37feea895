package admin

import (
	"fmt"
	"net/http"

	"github.com/esraft/esraft/eventstore"
)

// HealthHandler serves /healthz and /readyz alone (no credentials
// needed), for a service whose admin API is off; New's handler serves
// them too.
func HealthHandler(store *eventstore.Store) http.Handler {
	h := &Handler{cfg: Config{Store: store, ReadyMaxBehind: defaultReadyMaxBehind}, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	return h
}

const defaultReadyMaxBehind = 1024

// Health is the body of /healthz and /readyz.
type Health struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Node   string `json:"node"`
	// Problems says why the node is not ready (readyz only).
	Problems []string         `json:"problems,omitempty"`
	Shards   []ShardReadiness `json:"shards,omitempty"`
}

// ShardReadiness is one shard as /readyz judged it.
type ShardReadiness struct {
	Shard        int    `json:"shard"`
	Leader       string `json:"leader"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Behind       uint64 `json:"behind"`
	// Damage is the first damage found in this node's state files of the
	// shard; FlushError the last failed write of its state (a full disk).
	Damage     string `json:"damage,omitempty"`
	FlushError string `json:"flush_error,omitempty"`
}

// healthz answers 200 while the process serves HTTP at all.
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok", Node: h.raftLog().NodeID()})
}

// readyz answers 200 when this node can serve reads and take writes:
// every shard has a known leader, this node has applied its shards to
// within ReadyMaxBehind entries of the commit index it knows, and none of
// its state files is damaged or failing to be written; 503 with the
// problems otherwise. (Raft's no-op and configuration entries
// are never applied to the state, so a small gap is normal.)
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	st := h.raftLog().Status()
	out := Health{Status: "ok", Node: st.NodeID}
	for _, s := range st.Shards {
		sr := ShardReadiness{Shard: int(s.Shard), Leader: s.LeaderID, CommitIndex: s.CommitIndex, AppliedIndex: s.AppliedIndex,
			Damage: s.Damage, FlushError: s.FlushError}
		if s.CommitIndex > s.AppliedIndex {
			sr.Behind = s.CommitIndex - s.AppliedIndex
		}
		switch {
		case s.Damage != "":
			out.Problems = append(out.Problems, fmt.Sprintf("shard %d: this node's state is damaged (%s); wipe its data directory and restart it to rejoin", s.Shard, s.Damage))
		case s.FlushError != "":
			out.Problems = append(out.Problems, fmt.Sprintf("shard %d: this node cannot write its state (%s)", s.Shard, s.FlushError))
		case s.LeaderID == "":
			out.Problems = append(out.Problems, fmt.Sprintf("shard %d has no leader", s.Shard))
		case sr.Behind > h.cfg.ReadyMaxBehind:
			out.Problems = append(out.Problems, fmt.Sprintf("shard %d: applied %d entries behind the commit index (ready within %d)", s.Shard, sr.Behind, h.cfg.ReadyMaxBehind))
		}
		out.Shards = append(out.Shards, sr)
	}
	code := http.StatusOK
	if len(out.Problems) > 0 {
		out.Status, code = "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, out)
}
