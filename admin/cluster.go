package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// Status is the answer of GET /admin/status: the cluster as this node
// sees it, with every member probed.
type Status struct {
	Node       string            `json:"node"`
	Addr       string            `json:"addr"`
	ClusterID  string            `json:"cluster_id"`
	Nodes      []NodeStatus      `json:"nodes"`
	Shards     []ShardStatus     `json:"shards"`
	Partitions []PartitionStatus `json:"partitions"`
}

// NodeStatus is one member of the cluster.
type NodeStatus struct {
	ID        string `json:"id"`
	Addr      string `json:"addr"`
	Role      string `json:"role"` // "voter" or "worker"
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Leads are the shards it leads, as this node knows.
	Leads []int `json:"leads"`
}

// ShardStatus is one raft group.
type ShardStatus struct {
	Shard        int    `json:"shard"`
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"` // this node's state, as in raftlog.ShardStatus
	// Replicas are the members' raft indexes, and how far behind the
	// leader's commit index each has applied.
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one member's copy of a shard.
type ReplicaStatus struct {
	Node         string `json:"node"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Behind       uint64 `json:"behind"`
}

// PartitionStatus is one partition's head on this node.
type PartitionStatus struct {
	Partition  int    `json:"partition"`
	Shard      int    `json:"shard"`
	NextOffset uint64 `json:"next_offset"`
}

func (h *Handler) raftLog() *raftlog.Log { return h.cfg.Store.Log() }

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	l := h.raftLog()
	ls := l.Status()
	members, err := l.MemberStates(r.Context(), h.cfg.ProbeTimeout)
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	out := Status{Node: ls.NodeID, Addr: ls.Addr, ClusterID: ls.ClusterID, Nodes: []NodeStatus{}}
	for _, m := range members {
		ns := NodeStatus{ID: m.ID, Addr: m.Addr, Role: "worker", Reachable: m.Reachable, Leads: []int{}}
		if m.Voter {
			ns.Role = "voter"
		}
		if m.Err != nil {
			ns.Error = m.Err.Error()
		}
		for _, s := range ls.Shards {
			if s.LeaderID == m.ID {
				ns.Leads = append(ns.Leads, int(s.Shard))
			}
		}
		out.Nodes = append(out.Nodes, ns)
	}
	for i, s := range ls.Shards {
		ss := ShardStatus{Shard: int(s.Shard), Leader: s.LeaderID, Term: s.Term, CommitIndex: s.CommitIndex, AppliedIndex: s.AppliedIndex, Replicas: []ReplicaStatus{}}
		// The leader's commit index is the reference; this node's if the
		// leader did not answer.
		ref := s.CommitIndex
		for _, m := range members {
			if m.ID == s.LeaderID && len(m.Shards) > i {
				ref = m.Shards[i].CommitIndex
			}
		}
		for _, m := range members {
			if len(m.Shards) <= i {
				continue
			}
			ms := m.Shards[i]
			rs := ReplicaStatus{Node: m.ID, LastIndex: ms.LastIndex, CommitIndex: ms.CommitIndex, AppliedIndex: ms.AppliedIndex}
			if ref > ms.AppliedIndex {
				rs.Behind = ref - ms.AppliedIndex
			}
			ss.Replicas = append(ss.Replicas, rs)
		}
		out.Shards = append(out.Shards, ss)
	}
	for _, p := range ls.Partitions {
		out.Partitions = append(out.Partitions, PartitionStatus{Partition: int(p.Partition), Shard: int(p.Shard), NextOffset: p.NextOffset})
	}
	writeJSON(w, http.StatusOK, out)
}

// AddNodeRequest is the body of POST /admin/cluster/nodes.
type AddNodeRequest struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Role is "voter" (the default) or "worker".
	Role string `json:"role"`
}

// NodeChange is the answer of a membership change.
type NodeChange struct {
	Node   string `json:"node"`
	Action string `json:"action"` // "added", "removed", "promoted"
	Role   string `json:"role,omitempty"`
}

// membershipTimeout bounds a membership change made through the API.
const membershipTimeout = 30 * time.Second

func (h *Handler) addNode(w http.ResponseWriter, r *http.Request) {
	var req AddNodeRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.Role == "" {
		req.Role = "voter"
	}
	if req.ID == "" || req.Addr == "" || (req.Role != "voter" && req.Role != "worker") {
		writeError(w, http.StatusBadRequest, "bad_request", `adding a node needs "id", "addr" (host:port of its cluster address) and "role" voter or worker`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	var err error
	if req.Role == "voter" {
		err = h.raftLog().AddVoter(ctx, req.ID, req.Addr)
	} else {
		err = h.raftLog().AddNonvoter(ctx, req.ID, req.Addr)
	}
	if err != nil {
		h.writeMembershipError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, NodeChange{Node: req.ID, Action: "added", Role: req.Role})
}

func (h *Handler) removeNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := h.member(id); !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("node %q is not a member of the cluster", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	if err := h.raftLog().RemoveServer(ctx, id); err != nil {
		h.writeMembershipError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, NodeChange{Node: id, Action: "removed"})
}

func (h *Handler) promoteNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m, ok := h.member(id)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("node %q is not a member of the cluster", id))
		return
	}
	if m.Voter {
		writeError(w, http.StatusConflict, "already_voter", fmt.Sprintf("node %q is a voter already", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	if err := h.raftLog().AddVoter(ctx, id, m.Addr); err != nil {
		h.writeMembershipError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, NodeChange{Node: id, Action: "promoted", Role: "voter"})
}

// member returns node id from this node's view of the membership.
func (h *Handler) member(id string) (raftlog.ServerStatus, bool) {
	for _, s := range h.raftLog().Status().Shards {
		for _, srv := range s.Servers {
			if srv.ID == id {
				return srv, true
			}
		}
	}
	return raftlog.ServerStatus{}, false
}

func (h *Handler) writeMembershipError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, raftlog.ErrConfig):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, raftlog.ErrNoLeader), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		h.writeStoreError(w, err)
	}
}

// TransferRequest is the body of POST /admin/cluster/shards/{shard}/transfer.
type TransferRequest struct {
	// To is the voter to hand leadership to; "" lets raft choose the most
	// up-to-date one.
	To string `json:"to"`
}

// Transfer is the answer of a leadership transfer.
type Transfer struct {
	Shard  int    `json:"shard"`
	From   string `json:"from"`
	Leader string `json:"leader"` // the leader after the transfer, as this node knows it
}

func (h *Handler) transfer(w http.ResponseWriter, r *http.Request) {
	shard, err := strconv.Atoi(r.PathValue("shard"))
	l := h.raftLog()
	if err != nil || shard < 0 || shard >= l.Shards() {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("shard %q does not exist (shards 0..%d)", r.PathValue("shard"), l.Shards()-1))
		return
	}
	var req TransferRequest
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, &req); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
	}
	st := l.Status().Shards[shard]
	if st.LeaderID != l.NodeID() {
		leader := st.LeaderID
		if leader == "" {
			writeError(w, http.StatusServiceUnavailable, "unavailable", fmt.Sprintf("shard %d has no leader now; try again", shard))
			return
		}
		writeError(w, http.StatusConflict, "not_leader", fmt.Sprintf("node %s does not lead shard %d: %s does; send the transfer to %s's admin address", l.NodeID(), shard, leader, leader))
		return
	}
	if req.To == l.NodeID() {
		writeError(w, http.StatusConflict, "already_leader", fmt.Sprintf("node %s leads shard %d already", req.To, shard))
		return
	}
	if err := l.TransferLeadership(raftlog.Shard(shard), req.To); err != nil {
		h.writeMembershipError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Transfer{Shard: shard, From: l.NodeID(), Leader: l.Status().Shards[shard].LeaderID})
}

// Rebalance is the answer of POST /admin/cluster/rebalance.
type Rebalance struct {
	Node  string `json:"node"`
	Moved int    `json:"moved"` // leaderships this node handed to voters leading fewer
}

func (h *Handler) rebalance(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	n, err := h.raftLog().Rebalance(ctx)
	if err != nil {
		h.writeMembershipError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Rebalance{Node: h.raftLog().NodeID(), Moved: n})
}
