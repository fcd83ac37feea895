package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
)

// groupState is a group's state in the classic protocol.
type groupState int

const (
	groupEmpty groupState = iota
	groupPreparingRebalance
	groupCompletingRebalance
	groupStable
)

func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable"}[s]
}

// Bounds of what a member may ask for.
const (
	minSessionTimeout = 1 * time.Second
	maxSessionTimeout = 30 * time.Minute
	maxGroupName      = 1024
	maxMembers        = 1000
	// commitsPerTruncate: the offsets stream keeps only its last event;
	// the ones before it are truncated every so many commits.
	commitsPerTruncate = 64
	// maxGroups bounds the groups held in memory; an empty group unused
	// for idleGroupTimeout is dropped (its offsets stay in the log and
	// are read again when it is next named).
	maxGroups        = 10_000
	idleGroupTimeout = time.Minute
	// maxPending bounds a group's member IDs handed out and not yet used.
	maxPending = maxMembers
)

// coordinator runs the classic group protocol in memory for the groups
// this node coordinates; committed offsets are the replicated part.
type coordinator struct {
	s  *Server
	mu sync.Mutex
	// groups by name; a group stays while it has members or offsets
	// loaded (bounded by the groups clients name).
	groups map[string]*group
	// maxGroups bounds len(groups) (maxGroups; tests lower it).
	maxGroups int
}

type member struct {
	id, clientID, host string
	protocols          []kmsg.JoinGroupRequestProtocol
	session, rebalance time.Duration
	lastSeen           time.Time
	joined             bool // rejoined in the current rebalance
	joinResp           *kmsg.JoinGroupResponse
	assignment         []byte
}

type group struct {
	name         string
	state        groupState
	protocolType string
	protocol     string
	generation   int32
	leader       string
	members      map[string]*member
	pending      map[string]time.Time // member IDs handed out, not yet joined (v4+)
	deadline     time.Time            // of the rebalance in progress
	notBefore    time.Time            // a new group's first rebalance waits for more members until then
	joinDone     chan struct{}        // closed when the rebalance completes
	syncDone     chan struct{}        // closed when the leader's assignment arrives
	syncAborted  bool                 // syncDone was closed by a new rebalance
	lastUsed     time.Time            // of the last request naming the group

	// offsets: loaded once from the replicated stream, then written
	// through. offMu serializes commits (never held with coordinator.mu).
	offMu      sync.Mutex
	offLoaded  bool
	offVersion uint64
	offsets    map[topicPartition]committedOffset
	commits    int
}

type topicPartition struct {
	Topic     string
	Partition int32
}

type committedOffset struct {
	Offset      int64
	LeaderEpoch int32
	Metadata    *string
}

func newCoordinator(s *Server) *coordinator {
	return &coordinator{s: s, groups: map[string]*group{}, maxGroups: maxGroups}
}

// run expires sessions and ends rebalances whose time is up.
func (c *coordinator) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			for name, g := range c.groups {
				c.tickLocked(g, now)
				if g.state == groupEmpty && len(g.members) == 0 && len(g.pending) == 0 && now.Sub(g.lastUsed) > idleGroupTimeout {
					delete(c.groups, name)
				}
			}
			c.mu.Unlock()
		}
	}
}

func (c *coordinator) tickLocked(g *group, now time.Time) {
	for id, exp := range g.pending {
		if now.After(exp) {
			delete(g.pending, id)
		}
	}
	if g.state == groupPreparingRebalance {
		// A member that has not rejoined and whose session ran out is
		// gone: the others need not wait for the rebalance timeout.
		for id, m := range g.members {
			if !m.joined && now.Sub(m.lastSeen) > m.session {
				c.s.log.Info("kafka: group member expired", "group", g.name, "member", id)
				delete(g.members, id)
			}
		}
		if now.After(g.deadline) || allJoinedLocked(g) && !now.Before(g.notBefore) {
			c.completeLocked(g, now)
		}
		return
	}
	expired := false
	for id, m := range g.members {
		if now.Sub(m.lastSeen) > m.session {
			c.s.log.Info("kafka: group member expired", "group", g.name, "member", id)
			delete(g.members, id)
			expired = true
		}
	}
	if expired {
		c.rebalanceLocked(g, now)
	}
}

// groupLocked returns the group, creating it empty.
// groupLocked returns the group, creating it empty; nil if maxGroups are
// held already.
func (c *coordinator) groupLocked(name string) *group {
	g := c.groups[name]
	if g == nil {
		if len(c.groups) >= c.maxGroups {
			return nil
		}
		g = &group{name: name, members: map[string]*member{}, pending: map[string]time.Time{}}
		c.groups[name] = g
	}
	g.lastUsed = time.Now()
	return g
}

// rebalanceLocked starts a rebalance (or ends one in an empty group).
func (c *coordinator) rebalanceLocked(g *group, now time.Time) {
	if g.state == groupCompletingRebalance && g.syncDone != nil {
		g.syncAborted = true
		close(g.syncDone)
		g.syncDone = nil
	}
	if len(g.members) == 0 {
		if g.state == groupPreparingRebalance {
			c.completeLocked(g, now)
		}
		g.state = groupEmpty
		return
	}
	if g.state != groupPreparingRebalance {
		delay := time.Duration(0)
		if g.state == groupEmpty {
			delay = c.s.cfg.InitialRebalanceDelay
		}
		g.state = groupPreparingRebalance
		g.joinDone = make(chan struct{})
		g.notBefore = now.Add(delay)
		g.deadline = g.notBefore
		for _, m := range g.members {
			m.joined = false
			if d := now.Add(m.rebalance); d.After(g.deadline) {
				g.deadline = d
			}
		}
	}
}

// allJoinedLocked reports whether every member rejoined.
func allJoinedLocked(g *group) bool {
	for _, m := range g.members {
		if !m.joined {
			return false
		}
	}
	return true
}

// completeLocked ends the join phase: members that did not rejoin are
// dropped, the next generation is formed and every waiting join answered.
func (c *coordinator) completeLocked(g *group, now time.Time) {
	for id, m := range g.members {
		if !m.joined {
			delete(g.members, id)
		}
	}
	g.generation++
	done := g.joinDone
	g.joinDone = nil
	defer func() {
		if done != nil {
			close(done)
		}
	}()
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = groupEmpty, "", ""
		return
	}
	ids := memberIDs(g)
	if _, ok := g.members[g.leader]; !ok {
		g.leader = ids[0]
	}
	g.protocol = ""
	for _, p := range g.members[g.leader].protocols {
		all := true
		for _, m := range g.members {
			if protocolMetadata(m, p.Name) == nil {
				all = false
				break
			}
		}
		if all {
			g.protocol = p.Name
			break
		}
	}
	g.state = groupCompletingRebalance
	g.syncDone = make(chan struct{})
	g.syncAborted = false
	for _, id := range ids {
		m := g.members[id]
		m.assignment = nil
		m.lastSeen = now
		resp := kmsg.NewPtrJoinGroupResponse()
		if g.protocol == "" {
			resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		}
		resp.Generation = g.generation
		// Copies: the response is written after c.mu is released, while
		// a later join may change the group's fields.
		protocol, protocolType := g.protocol, g.protocolType
		resp.Protocol = &protocol
		resp.ProtocolType = &protocolType
		resp.LeaderID = g.leader
		resp.MemberID = id
		if id == g.leader {
			for _, oid := range ids {
				jm := kmsg.NewJoinGroupResponseMember()
				jm.MemberID = oid
				jm.ProtocolMetadata = protocolMetadata(g.members[oid], g.protocol)
				resp.Members = append(resp.Members, jm)
			}
		}
		m.joinResp = resp
	}
}

// notCoordinator reports whether group requests must go to another node
// (NOT_COORDINATOR: the client asks FindCoordinator again).
func (s *Server) notCoordinator() bool {
	ctx, cancel := s.requestCtx(int32(5 * time.Second / time.Millisecond))
	defer cancel()
	_, self := s.coordinator(ctx)
	return !self
}

// waitLocked releases c.mu until done is closed (at once if nil), then
// takes it again; false if the server closed first.
func (c *coordinator) waitLocked(done chan struct{}) bool {
	if done == nil {
		return true
	}
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-done:
		return true
	case <-c.s.ctx.Done():
		return false
	}
}

// memberIDs returns g's member IDs in order (c.mu held).
func memberIDs(g *group) []string {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func protocolMetadata(m *member, name string) []byte {
	for _, p := range m.protocols {
		if p.Name == name {
			if p.Metadata == nil {
				return []byte{}
			}
			return p.Metadata
		}
	}
	return nil
}

func validGroup(name string) bool { return name != "" && len(name) <= maxGroupName }

func (s *Server) joinGroup(req request) kmsg.Response {
	r := req.msg.(*kmsg.JoinGroupRequest)
	resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = -1
	session := time.Duration(r.SessionTimeoutMillis) * time.Millisecond
	rebalance := session
	if req.version >= 1 {
		rebalance = time.Duration(r.RebalanceTimeoutMillis) * time.Millisecond
	}
	switch {
	case !validGroup(r.Group):
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	case session < minSessionTimeout || session > maxSessionTimeout || rebalance <= 0 || rebalance > maxSessionTimeout:
		resp.ErrorCode = kerr.InvalidSessionTimeout.Code
		return resp
	case len(r.Protocols) == 0 || r.ProtocolType == "":
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return resp
	case r.InstanceID != nil:
		// Static membership is not served.
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		return resp
	}
	if s.notCoordinator() {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	c := s.groups
	now := time.Now()
	c.mu.Lock()
	g := c.groupLocked(r.Group)
	if g == nil {
		c.mu.Unlock()
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	if len(g.members) > 0 && g.protocolType != r.ProtocolType {
		c.mu.Unlock()
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return resp
	}
	id := r.MemberID
	if id == "" {
		id = req.clientID + "-" + uuid.NewString()
		if req.version >= 4 {
			// KIP-394: the client joins again with this ID.
			if len(g.pending) >= maxPending {
				c.mu.Unlock()
				resp.ErrorCode = kerr.GroupMaxSizeReached.Code
				return resp
			}
			g.pending[id] = now.Add(session)
			c.mu.Unlock()
			resp.MemberID = id
			resp.ErrorCode = kerr.MemberIDRequired.Code
			return resp
		}
	} else if _, known := g.members[id]; !known {
		if _, ok := g.pending[id]; !ok {
			c.mu.Unlock()
			resp.MemberID = id
			resp.ErrorCode = kerr.UnknownMemberID.Code
			return resp
		}
	}
	m := g.members[id]
	if m == nil {
		if len(g.members) >= maxMembers {
			c.mu.Unlock()
			resp.ErrorCode = kerr.GroupMaxSizeReached.Code
			return resp
		}
		m = &member{id: id}
		g.members[id] = m
		delete(g.pending, id)
	}
	g.protocolType = r.ProtocolType
	m.clientID, m.host = req.clientID, ""
	// The request's byte fields alias the connection's read buffer,
	// which its next request overwrites: keep copies.
	m.protocols = make([]kmsg.JoinGroupRequestProtocol, len(r.Protocols))
	for i, p := range r.Protocols {
		p.Metadata = bytes.Clone(p.Metadata)
		m.protocols[i] = p
	}
	m.session, m.rebalance = session, rebalance
	m.lastSeen = now
	c.rebalanceLocked(g, now)
	m.joined = true
	m.joinResp = nil
	if g.state == groupPreparingRebalance && allJoinedLocked(g) && !now.Before(g.notBefore) {
		c.completeLocked(g, now)
	}
	if !c.waitLocked(g.joinDone) {
		c.mu.Unlock()
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	defer c.mu.Unlock()
	if m.joinResp == nil || g.members[id] != m {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp
	}
	out := m.joinResp
	out.SetVersion(req.version)
	return out
}

func (s *Server) syncGroup(req request) kmsg.Response {
	r := req.msg.(*kmsg.SyncGroupRequest)
	resp := r.ResponseKind().(*kmsg.SyncGroupResponse)
	if s.notCoordinator() {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	c := s.groups
	c.mu.Lock()
	g, m, code := c.memberLocked(r.Group, r.MemberID, r.Generation)
	if code != 0 {
		c.mu.Unlock()
		resp.ErrorCode = code
		return resp
	}
	m.lastSeen = time.Now()
	switch g.state {
	case groupPreparingRebalance:
		c.mu.Unlock()
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp
	case groupCompletingRebalance:
		if r.MemberID == g.leader {
			for _, a := range r.GroupAssignment {
				if om := g.members[a.MemberID]; om != nil {
					om.assignment = bytes.Clone(a.MemberAssignment) // a.MemberAssignment aliases the read buffer
				}
			}
			g.state = groupStable
			close(g.syncDone)
			g.syncDone = nil
		}
	}
	if !c.waitLocked(g.syncDone) {
		c.mu.Unlock()
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	defer c.mu.Unlock()
	if g.members[r.MemberID] != m {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp
	}
	if g.state != groupStable || g.generation != r.Generation {
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp
	}
	protocol, protocolType := g.protocol, g.protocolType // copies, as in completeLocked
	resp.ProtocolType = &protocolType
	resp.Protocol = &protocol
	resp.MemberAssignment = m.assignment
	if resp.MemberAssignment == nil {
		resp.MemberAssignment = []byte{}
	}
	return resp
}

// memberLocked finds a member of a group at a generation, or the error
// code to answer.
func (c *coordinator) memberLocked(name, id string, generation int32) (*group, *member, int16) {
	if !validGroup(name) {
		return nil, nil, kerr.InvalidGroupID.Code
	}
	g := c.groups[name]
	if g == nil {
		return nil, nil, kerr.UnknownMemberID.Code
	}
	m := g.members[id]
	if m == nil {
		return g, nil, kerr.UnknownMemberID.Code
	}
	if generation != g.generation {
		return g, m, kerr.IllegalGeneration.Code
	}
	return g, m, 0
}

func (s *Server) heartbeat(req request) kmsg.Response {
	r := req.msg.(*kmsg.HeartbeatRequest)
	resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
	if s.notCoordinator() {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	c := s.groups
	c.mu.Lock()
	defer c.mu.Unlock()
	g, m, code := c.memberLocked(r.Group, r.MemberID, r.Generation)
	if m != nil {
		m.lastSeen = time.Now()
	}
	if code == 0 && g.state == groupPreparingRebalance {
		code = kerr.RebalanceInProgress.Code
	}
	resp.ErrorCode = code
	return resp
}

func (s *Server) leaveGroup(req request) kmsg.Response {
	r := req.msg.(*kmsg.LeaveGroupRequest)
	resp := r.ResponseKind().(*kmsg.LeaveGroupResponse)
	ids := []string{r.MemberID}
	if req.version >= 3 {
		ids = ids[:0]
		for _, m := range r.Members {
			ids = append(ids, m.MemberID)
		}
	}
	if !validGroup(r.Group) {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	if s.notCoordinator() {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	c := s.groups
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[r.Group]
	left := false
	for _, id := range ids {
		code := kerr.UnknownMemberID.Code
		if g != nil && g.members[id] != nil {
			delete(g.members, id)
			code, left = 0, true
		}
		if req.version >= 3 {
			lm := kmsg.NewLeaveGroupResponseMember()
			lm.MemberID, lm.ErrorCode = id, code
			resp.Members = append(resp.Members, lm)
		} else {
			resp.ErrorCode = code
		}
	}
	if left {
		now := time.Now()
		c.rebalanceLocked(g, now)
		if g.state == groupPreparingRebalance && allJoinedLocked(g) && !now.Before(g.notBefore) {
			c.completeLocked(g, now)
		}
	}
	return resp
}

func (s *Server) findCoordinator(req request) kmsg.Response {
	r := req.msg.(*kmsg.FindCoordinatorRequest)
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	keys := r.CoordinatorKeys
	if req.version < 4 {
		keys = []string{r.CoordinatorKey}
	}
	ctx, cancel := s.requestCtx(int32(5 * time.Second / time.Millisecond))
	defer cancel()
	target, _ := s.coordinator(ctx)
	for _, k := range keys {
		code := int16(0)
		if r.CoordinatorType != 0 {
			code = kerr.CoordinatorNotAvailable.Code // transactions are not served
		}
		if req.version < 4 {
			resp.ErrorCode = code
			if code == 0 {
				resp.NodeID, resp.Host, resp.Port = target.BrokerID, target.Host, target.Port
			} else {
				resp.NodeID, resp.Port = -1, -1
			}
			break
		}
		co := kmsg.NewFindCoordinatorResponseCoordinator()
		co.Key, co.ErrorCode = k, code
		co.NodeID, co.Host, co.Port = target.BrokerID, target.Host, target.Port
		if code != 0 {
			co.NodeID, co.Host, co.Port = -1, "", -1
		}
		resp.Coordinators = append(resp.Coordinators, co)
	}
	return resp
}

// offsetsRecord is the event data of "$kafka-offsets-<group>": every
// committed offset of the group as of that commit.
type offsetsRecord struct {
	Offsets []storedOffset `json:"offsets"`
}

type storedOffset struct {
	Topic       string  `json:"topic"`
	Partition   int32   `json:"partition"`
	Offset      int64   `json:"offset"`
	LeaderEpoch int32   `json:"leader_epoch"`
	Metadata    *string `json:"metadata,omitempty"`
}

// loadOffsetsLocked reads the group's last committed offsets (g.offMu
// held), after a read barrier so that another coordinator's last commit
// is seen.
func (s *Server) loadOffsetsLocked(ctx context.Context, g *group) error {
	if g.offLoaded {
		return nil
	}
	if err := s.store.Barrier(ctx); err != nil {
		return err
	}
	stream := offsetsPrefix + g.name
	evs, err := s.store.ReadStreamBackward(ctx, stream, 0, 1)
	if err != nil {
		return err
	}
	g.offsets = map[topicPartition]committedOffset{}
	g.offVersion = 0
	if len(evs) == 1 {
		var rec offsetsRecord
		if err := json.Unmarshal(evs[0].Data, &rec); err != nil {
			return fmt.Errorf("kafka: %s version %d: %w", stream, evs[0].Version, err)
		}
		for _, o := range rec.Offsets {
			g.offsets[topicPartition{o.Topic, o.Partition}] = committedOffset{o.Offset, o.LeaderEpoch, o.Metadata}
		}
		g.offVersion = evs[0].Version
	}
	g.offLoaded = true
	return nil
}

// commitOffsets records commits for g: one append of the whole map,
// conditioned on the version this node read, so a commit made meanwhile
// by another coordinator is read and kept, never overwritten.
func (s *Server) commitOffsets(ctx context.Context, g *group, commits map[topicPartition]committedOffset) error {
	g.offMu.Lock()
	defer g.offMu.Unlock()
	stream := offsetsPrefix + g.name
	for attempt := 0; ; attempt++ {
		if err := s.loadOffsetsLocked(ctx, g); err != nil {
			return err
		}
		next := make(map[topicPartition]committedOffset, len(g.offsets)+len(commits))
		for k, v := range g.offsets {
			next[k] = v
		}
		for k, v := range commits {
			next[k] = v
		}
		rec := offsetsRecord{Offsets: make([]storedOffset, 0, len(next))}
		for k, v := range next {
			rec.Offsets = append(rec.Offsets, storedOffset{k.Topic, k.Partition, v.Offset, v.LeaderEpoch, v.Metadata})
		}
		sort.Slice(rec.Offsets, func(i, j int) bool {
			a, b := rec.Offsets[i], rec.Offsets[j]
			return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
		})
		data, _ := json.Marshal(rec)
		res, err := s.store.Append(ctx, stream, eventstore.Exact(g.offVersion),
			[]eventstore.EventData{{Type: "kafka.offsets", Data: data}})
		if errors.Is(err, eventstore.ErrWrongVersion) && attempt < 3 {
			g.offLoaded = false
			continue
		}
		if err != nil {
			g.offLoaded = false
			return err
		}
		g.offsets, g.offVersion = next, res.LastVersion
		g.commits++
		if g.commits%commitsPerTruncate == 0 && res.LastVersion > 1 {
			if _, err := s.store.TruncateStream(ctx, stream, res.LastVersion, eventstore.Any); err != nil {
				s.log.Warn("kafka: truncating an offsets stream failed", "group", g.name, "err", err)
			}
		}
		return nil
	}
}

func (s *Server) offsetCommit(req request) kmsg.Response {
	r := req.msg.(*kmsg.OffsetCommitRequest)
	resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
	ctx, cancel := s.requestCtx(int32(maxWait / time.Millisecond))
	defer cancel()
	code := int16(0)
	c := s.groups
	notCoord := s.notCoordinator()
	c.mu.Lock()
	var g *group
	if !validGroup(r.Group) {
		code = kerr.InvalidGroupID.Code
	} else if notCoord {
		code = kerr.NotCoordinator.Code
	} else if r.Generation < 0 && r.MemberID == "" {
		// A commit from outside the group protocol: only while the
		// group has no members.
		g = c.groupLocked(r.Group)
		if g == nil {
			code = kerr.CoordinatorNotAvailable.Code
		} else if len(g.members) > 0 {
			code = kerr.RebalanceInProgress.Code
		}
	} else {
		var m *member
		g, m, code = c.memberLocked(r.Group, r.MemberID, r.Generation)
		if m != nil {
			m.lastSeen = time.Now()
		}
		if code == 0 && g.state == groupCompletingRebalance {
			code = kerr.RebalanceInProgress.Code
		}
	}
	c.mu.Unlock()
	commits := map[topicPartition]committedOffset{}
	for _, rt := range r.Topics {
		t := kmsg.NewOffsetCommitResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetCommitResponseTopicPartition()
			p.Partition = rp.Partition
			p.ErrorCode = code
			if code == 0 {
				p.ErrorCode = s.checkPartition(ctx, rt.Topic, rp.Partition)
			}
			if p.ErrorCode == 0 && rp.Offset < 0 {
				p.ErrorCode = kerr.OffsetOutOfRange.Code
			}
			if p.ErrorCode == 0 {
				commits[topicPartition{rt.Topic, rp.Partition}] = committedOffset{rp.Offset, rp.LeaderEpoch, rp.Metadata}
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if len(commits) > 0 {
		if err := s.commitOffsets(ctx, g, commits); err != nil {
			ec := errorCode(err)
			if errors.Is(err, eventstore.ErrWrongVersion) {
				ec = kerr.NotCoordinator.Code
			}
			for i := range resp.Topics {
				for j := range resp.Topics[i].Partitions {
					p := &resp.Topics[i].Partitions[j]
					if p.ErrorCode == 0 {
						p.ErrorCode = ec
					}
				}
			}
		}
	}
	return resp
}

func (s *Server) offsetFetch(req request) kmsg.Response {
	r := req.msg.(*kmsg.OffsetFetchRequest)
	resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
	if !validGroup(r.Group) {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	if s.notCoordinator() {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	ctx, cancel := s.requestCtx(int32(maxWait / time.Millisecond))
	defer cancel()
	c := s.groups
	c.mu.Lock()
	g := c.groupLocked(r.Group)
	c.mu.Unlock()
	if g == nil {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	g.offMu.Lock()
	err := s.loadOffsetsLocked(ctx, g)
	offsets := g.offsets
	g.offMu.Unlock()
	if err != nil {
		resp.ErrorCode = errorCode(err)
		return resp
	}
	topics := r.Topics
	if topics == nil { // every committed offset
		byTopic := map[string]*kmsg.OffsetFetchRequestTopic{}
		for tp := range offsets {
			t := byTopic[tp.Topic]
			if t == nil {
				nt := kmsg.NewOffsetFetchRequestTopic()
				nt.Topic = tp.Topic
				t = &nt
				byTopic[tp.Topic] = t
			}
			t.Partitions = append(t.Partitions, tp.Partition)
		}
		for _, t := range byTopic {
			sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i] < t.Partitions[j] })
			topics = append(topics, *t)
		}
		sort.Slice(topics, func(i, j int) bool { return topics[i].Topic < topics[j].Topic })
	}
	for _, rt := range topics {
		t := kmsg.NewOffsetFetchResponseTopic()
		t.Topic = rt.Topic
		for _, part := range rt.Partitions {
			p := kmsg.NewOffsetFetchResponseTopicPartition()
			p.Partition = part
			p.Offset, p.LeaderEpoch = -1, -1
			if o, ok := offsets[topicPartition{rt.Topic, part}]; ok {
				p.Offset, p.LeaderEpoch, p.Metadata = o.Offset, o.LeaderEpoch, o.Metadata
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

func (s *Server) describeGroups(req request) kmsg.Response {
	r := req.msg.(*kmsg.DescribeGroupsRequest)
	resp := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
	c := s.groups
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range r.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = name
		g := c.groups[name]
		if g == nil {
			dg.State = "Dead"
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		dg.State = g.state.String()
		dg.ProtocolType = g.protocolType
		dg.Protocol = g.protocol
		for _, id := range memberIDs(g) {
			m := g.members[id]
			dm := kmsg.NewDescribeGroupsResponseGroupMember()
			dm.MemberID, dm.ClientID, dm.ClientHost = id, m.clientID, m.host
			dm.ProtocolMetadata = protocolMetadata(m, g.protocol)
			dm.MemberAssignment = m.assignment
			dg.Members = append(dg.Members, dm)
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (s *Server) listGroups(req request) kmsg.Response {
	r := req.msg.(*kmsg.ListGroupsRequest)
	resp := r.ResponseKind().(*kmsg.ListGroupsResponse)
	seen := map[string]kmsg.ListGroupsResponseGroup{}
	c := s.groups
	c.mu.Lock()
	for name, g := range c.groups {
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState = name, g.protocolType, g.state.String()
		seen[name] = lg
	}
	c.mu.Unlock()
	// Groups with committed offsets that this node does not coordinate
	// now are listed as Empty.
	ctx, cancel := s.requestCtx(int32(10 * time.Second / time.Millisecond))
	defer cancel()
	after := ""
	for {
		page, err := s.store.ListStreams(ctx, eventstore.ListStreamsOptions{Prefix: offsetsPrefix, After: after, Limit: eventstore.MaxListStreams})
		if err != nil {
			break // a thin client cannot list streams: the in-memory groups only
		}
		for _, st := range page {
			name := st.Stream[len(offsetsPrefix):]
			if _, ok := seen[name]; !ok {
				lg := kmsg.NewListGroupsResponseGroup()
				lg.Group, lg.ProtocolType, lg.GroupState = name, "consumer", groupEmpty.String()
				seen[name] = lg
			}
		}
		if len(page) < eventstore.MaxListStreams {
			break
		}
		after = page[len(page)-1].Stream
	}
	filter := map[string]bool{}
	for _, st := range r.StatesFilter {
		filter[st] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if len(filter) == 0 || filter[seen[n].GroupState] {
			resp.Groups = append(resp.Groups, seen[n])
		}
	}
	return resp
}
