package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/mux"
)

// Node-to-node calls, carried by the mux's RPC service on the cluster address.
const (
	methodAppend     byte = 1 // an encoded append request, run on the group's leader
	methodMembership byte = 2 // a membership change of one group, run on its leader
	methodJoin       byte = 3 // a new node asks to be added to every group
	methodGroup      byte = 4 // a consumer group operation, run on group 0's leader
	methodReadIndex  byte = 5 // a raft group's applied index, from its leader (ReadBarrier)
)

// Reply status bytes of methodAppend and methodMembership.
const (
	replyOK         byte = 0
	replyNotLeader  byte = 1 // definitely not applied: retry on the leader
	replyUnknown    byte = 2 // may have been applied: retry with the same IDs
	replyKeySeq     byte = 3
	replyError      byte = 4 // a domain error: sentinel code + message
	replyIDConflict byte = 5
	replyPartition  byte = 6
	replyDeleted    byte = 7
	// consumer group replies
	replyStale         byte = 8
	replyUnknownMember byte = 9
)

// forwardAppend sends an encoded append to the node at addr, believed to
// lead its group.
func (l *Log) forwardAppend(ctx context.Context, addr string, enc []byte) (AppendResult, error) {
	resp, err := l.client.Call(ctx, addr, methodAppend, enc)
	if err != nil {
		// The request may have reached the leader before the failure.
		return AppendResult{}, &retryError{unknown: !errors.Is(err, mux.ErrClosed), cause: err}
	}
	return decodeAppendReply(resp)
}

func (l *Log) handleRPC(ctx context.Context, method byte, payload []byte) ([]byte, error) {
	switch method {
	case methodAppend:
		return l.serveAppend(ctx, payload), nil
	case methodMembership:
		return l.serveMembership(payload), nil
	case methodGroup:
		return l.serveGroup(ctx, payload), nil
	case methodReadIndex:
		return l.serveReadIndex(payload), nil
	case methodJoin:
		d := decoder{b: payload}
		id, addr, voter := d.string(), d.string(), d.byte() == 1
		if d.err != nil {
			return nil, d.err
		}
		var err error
		if voter {
			err = l.AddVoter(ctx, id, addr)
		} else {
			err = l.AddNonvoter(ctx, id, addr)
		}
		return nil, err
	default:
		return nil, fmt.Errorf("raftlog: unknown method %d", method)
	}
}

// serveAppend runs a forwarded append if this node leads its group; it
// never forwards again, so a stale leader view costs one round trip.
func (l *Log) serveAppend(ctx context.Context, enc []byte) []byte {
	d := decoder{b: enc}
	p := int(d.uvarint())
	g, err := l.groupOf(p)
	if d.err != nil || err != nil {
		return encodeAppendReply(AppendResult{}, fmt.Errorf("%w: %d", ErrUnknownPartition, p))
	}
	if g.raft.State() != raft.Leader {
		return []byte{replyNotLeader}
	}
	res, err := g.batcher.submit(ctx, enc)
	return encodeAppendReply(res, err)
}

func encodeAppendReply(res AppendResult, err error) []byte {
	var re *retryError
	var kse *KeySeqError
	switch {
	case err == nil:
		b := []byte{replyOK}
		b = binary.AppendUvarint(b, uint64(res.Partition))
		b = binary.AppendUvarint(b, res.FirstOffset)
		b = binary.AppendUvarint(b, res.FirstKeySeq)
		b = binary.AppendUvarint(b, uint64(res.Count))
		b = binary.AppendVarint(b, res.Time.UnixNano())
		b = binary.AppendUvarint(b, uint64(res.Position.Group))
		b = binary.AppendUvarint(b, res.Position.Index)
		if res.Duplicate {
			return append(b, 1)
		}
		return append(b, 0)
	case errors.As(err, &re):
		if re.unknown {
			return []byte{replyUnknown}
		}
		return []byte{replyNotLeader}
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return []byte{replyUnknown}
	case errors.As(err, &kse):
		b := []byte{replyKeySeq}
		b = binary.AppendUvarint(b, uint64(kse.Partition))
		b = appendString(b, kse.Key)
		b = append(b, byte(kse.Condition))
		b = binary.AppendUvarint(b, kse.Expected)
		b = binary.AppendUvarint(b, kse.Actual)
		if kse.Deleted {
			return append(b, 1)
		}
		return append(b, 0)
	case errors.Is(err, ErrIDConflict):
		return appendString([]byte{replyIDConflict}, err.Error())
	case errors.Is(err, ErrUnknownPartition):
		return appendString([]byte{replyPartition}, err.Error())
	case errors.Is(err, ErrKeyDeleted):
		return appendString([]byte{replyDeleted}, err.Error())
	default:
		return appendString([]byte{replyError}, err.Error())
	}
}

// retryReply is the error of a reply that asks the caller to try again:
// replyNotLeader (definitely not applied) or replyUnknown (maybe applied).
func retryReply(code byte) error {
	if code == replyUnknown {
		return &retryError{unknown: true, cause: raft.ErrLeadershipLost}
	}
	return &retryError{cause: raft.ErrNotLeader}
}

// remoteError keeps a leader's error text while matching our sentinel.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func decodeAppendReply(b []byte) (AppendResult, error) {
	d := decoder{b: b}
	var res AppendResult
	var err error
	switch d.byte() {
	case replyOK:
		res.Partition = int(d.uvarint())
		res.FirstOffset = d.uvarint()
		res.FirstKeySeq = d.uvarint()
		res.Count = int(d.uvarint())
		res.Time = time.Unix(0, d.varint()).UTC()
		res.Position.Group = int(d.uvarint())
		res.Position.Index = d.uvarint()
		res.Duplicate = d.byte() == 1
	case replyNotLeader, replyUnknown:
		err = retryReply(b[0])
	case replyKeySeq:
		kse := &KeySeqError{Partition: int(d.uvarint()), Key: d.string(), Condition: KeyCondition(d.byte())}
		kse.Expected, kse.Actual, kse.Deleted = d.uvarint(), d.uvarint(), d.byte() == 1
		err = kse
	case replyIDConflict:
		err = &remoteError{sentinel: ErrIDConflict, msg: d.string()}
	case replyPartition:
		err = &remoteError{sentinel: ErrUnknownPartition, msg: d.string()}
	case replyDeleted:
		err = &remoteError{sentinel: ErrKeyDeleted, msg: d.string()}
	case replyError:
		err = errors.New(d.string())
	default:
		d.fail()
	}
	if d.err != nil {
		return AppendResult{}, &retryError{unknown: true, cause: fmt.Errorf("raftlog: undecodable reply: %w", d.err)}
	}
	return res, err
}

// Membership operations.
const (
	opAddVoter    byte = 1
	opAddNonvoter byte = 2
	opRemove      byte = 3
)

// AddVoter adds (or re-addresses) a voter in every group. The node must be
// running with the same Partitions and Groups, reachable at addr.
func (l *Log) AddVoter(ctx context.Context, id, addr string) error {
	return l.changeMembership(ctx, opAddVoter, id, addr)
}

// AddNonvoter adds a non-voting replica to every group: it receives every
// entry and serves reads but does not count toward a quorum.
func (l *Log) AddNonvoter(ctx context.Context, id, addr string) error {
	return l.changeMembership(ctx, opAddNonvoter, id, addr)
}

// RemoveServer removes a node from every group.
func (l *Log) RemoveServer(ctx context.Context, id string) error {
	return l.changeMembership(ctx, opRemove, id, "")
}

func (l *Log) changeMembership(ctx context.Context, op byte, id, addr string) error {
	if id == "" || (op != opRemove && addr == "") {
		return fmt.Errorf("%w: membership change needs a node ID and an address", ErrConfig)
	}
	for _, g := range l.groups {
		if err := l.changeGroup(ctx, g, op, id, addr); err != nil {
			return fmt.Errorf("raftlog: group %d: %w", g.id, err)
		}
	}
	return nil
}

func (l *Log) changeGroup(ctx context.Context, g *group, op byte, id, addr string) error {
	payload := []byte{op}
	payload = binary.AppendUvarint(payload, uint64(g.id))
	payload = appendString(payload, id)
	payload = appendString(payload, addr)
	bo := backoff{}
	for {
		if l.isClosed() {
			return ErrClosed
		}
		changed := g.leaderSig.wait()
		leaderAddr, leaderID := g.raft.LeaderWithID()
		var reply []byte
		var err error
		switch {
		case leaderID == raft.ServerID(l.cfg.NodeID):
			reply = l.serveMembership(payload)
		case leaderAddr != "" && l.client != nil:
			reply, err = l.client.Call(ctx, string(leaderAddr), methodMembership, payload)
		}
		if err == nil && len(reply) > 0 {
			switch reply[0] {
			case replyOK:
				return nil
			case replyError:
				d := decoder{b: reply[1:]}
				return errors.New(d.string())
			}
		}
		select {
		case <-changed:
		case <-bo.next():
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-l.closing:
			return ErrClosed
		}
	}
}

// serveMembership applies a membership change if this node leads the group.
func (l *Log) serveMembership(payload []byte) []byte {
	d := decoder{b: payload}
	op, gi, id, addr := d.byte(), int(d.uvarint()), d.string(), d.string()
	if d.err != nil || gi >= len(l.groups) {
		return appendString([]byte{replyError}, "raftlog: malformed membership change")
	}
	r := l.groups[gi].raft
	if r.State() != raft.Leader {
		return []byte{replyNotLeader}
	}
	var f raft.IndexFuture
	switch op {
	case opAddVoter:
		f = r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	case opAddNonvoter:
		f = r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	case opRemove:
		f = r.RemoveServer(raft.ServerID(id), 0, 0)
	default:
		return appendString([]byte{replyError}, fmt.Sprintf("raftlog: unknown membership op %d", op))
	}
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return []byte{replyNotLeader}
		}
		return appendString([]byte{replyError}, err.Error())
	}
	return []byte{replyOK}
}

// join asks the node at cfg.Join to add this node to every group, retrying
// until ctx ends.
func (l *Log) join(ctx context.Context) error {
	payload := appendString(nil, l.cfg.NodeID)
	payload = appendString(payload, l.advertise)
	if l.cfg.NonVoter {
		payload = append(payload, 0)
	} else {
		payload = append(payload, 1)
	}
	bo := backoff{}
	for {
		_, err := l.client.Call(ctx, l.cfg.Join, methodJoin, payload)
		if err == nil {
			return nil
		}
		select {
		case <-bo.next():
		case <-ctx.Done():
			return fmt.Errorf("raftlog: join %s: %w (last error: %v)", l.cfg.Join, ctx.Err(), err)
		}
	}
}

// TransferLeadership asks group g's leader to hand leadership to node id
// (any up-to-date voter if id is empty). It must run on the current leader.
func (l *Log) TransferLeadership(g int, id string) error {
	if g < 0 || g >= len(l.groups) {
		return fmt.Errorf("%w: group %d", ErrUnknownPartition, g)
	}
	r := l.groups[g].raft
	var f raft.Future
	if id == "" {
		f = r.LeadershipTransfer()
	} else {
		var addr raft.ServerAddress
		cf := r.GetConfiguration()
		if err := cf.Error(); err != nil {
			return err
		}
		for _, s := range cf.Configuration().Servers {
			if s.ID == raft.ServerID(id) {
				addr = s.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %q is not a member of group %d", ErrConfig, id, g)
		}
		f = r.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("raftlog: transfer leadership of group %d: %w", g, err)
	}
	return nil
}

// Status describes this node's view of the log.
type Status struct {
	NodeID     string
	Addr       string
	Groups     []GroupStatus
	Partitions []PartitionStatus
}

// GroupStatus is one raft group as this node sees it.
type GroupStatus struct {
	Group        int
	State        string // Leader, Follower, Candidate, Shutdown
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64 // last entry applied to this node's state (raft's no-op entries never are)
	LastIndex    uint64
	Servers      []ServerStatus
}

// ServerStatus is a member of a group.
type ServerStatus struct {
	ID    string
	Addr  string
	Voter bool
}

// PartitionStatus is one partition on this replica.
type PartitionStatus struct {
	Partition  int
	Group      int
	NextOffset uint64
}

// Status reports each group's leader, term and indexes and each
// partition's next offset, as this node sees them.
func (l *Log) Status() Status {
	s := Status{NodeID: l.cfg.NodeID, Addr: l.advertise}
	for _, g := range l.groups {
		addr, id := g.raft.LeaderWithID()
		gs := GroupStatus{
			Group: g.id, State: g.raft.State().String(), LeaderID: string(id), LeaderAddr: string(addr),
			Term: g.raft.CurrentTerm(), CommitIndex: g.raft.CommitIndex(), AppliedIndex: g.fsm.applied.Load(),
			LastIndex: g.raft.LastIndex(),
		}
		if cf := g.raft.GetConfiguration(); cf.Error() == nil {
			for _, srv := range cf.Configuration().Servers {
				gs.Servers = append(gs.Servers, ServerStatus{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
			}
		}
		s.Groups = append(s.Groups, gs)
	}
	for p := 0; p < l.cfg.Partitions; p++ {
		next, _ := l.NextOffset(p)
		s.Partitions = append(s.Partitions, PartitionStatus{Partition: p, Group: l.GroupOf(p), NextOffset: next})
	}
	return s
}
