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

// JoinGroup adds member to consumer group (creating the group), or
// refreshes it if it is a member already, and returns the group's state.
// The member must then heartbeat at least once per sessionTimeout (a third
// of it is a good period) or be removed, its partitions given to others.
func (l *Log) JoinGroup(ctx context.Context, group, member string, sessionTimeout time.Duration) (GroupState, error) {
	if group == "" || member == "" || sessionTimeout <= 0 {
		return GroupState{}, fmt.Errorf("%w: a group, a member and a positive session timeout are required", ErrConfig)
	}
	return l.groupCall(ctx, &groupOp{Op: gopJoin, Group: group, Member: member, Session: int64(sessionTimeout)})
}

// Heartbeat keeps member in group and releases the partitions it was
// asked to give up (those it owns with Revoking set), once it has stopped
// working on them. It returns the group's state, or ErrUnknownMember if
// the member's session expired (it must join again).
func (l *Log) Heartbeat(ctx context.Context, group, member string, release []int) (GroupState, error) {
	return l.groupCall(ctx, &groupOp{Op: gopHeartbeat, Group: group, Member: member, Release: release})
}

// LeaveGroup removes member from group at once; its partitions go to the
// other members.
func (l *Log) LeaveGroup(ctx context.Context, group, member string) error {
	_, err := l.groupCall(ctx, &groupOp{Op: gopLeave, Group: group, Member: member})
	if errors.Is(err, ErrUnknownMember) {
		return nil
	}
	return err
}

// CommitOffsets records member's progress on partitions it owns. Each
// commit must carry the generation at which the member was granted the
// partition; if any does not match the partition's current grant (the
// member lost it), the whole call fails with a *StaleGenerationError and
// nothing is recorded. A committed offset never moves back.
func (l *Log) CommitOffsets(ctx context.Context, group, member string, commits []OffsetCommit) (GroupState, error) {
	return l.groupCall(ctx, &groupOp{Op: gopCommit, Group: group, Member: member, Commits: commits})
}

// RetryParked asks the owner of partition to handle the parked record at
// offset again (with those parked behind it on the same key).
func (l *Log) RetryParked(ctx context.Context, group string, partition int, offset uint64) error {
	_, err := l.groupCall(ctx, &groupOp{Op: gopRetry, Group: group, Partition: partition, Offset: offset})
	return err
}

// GroupState returns consumer group as this node has applied it; false if
// it does not exist.
func (l *Log) GroupState(group string) (GroupState, bool, error) {
	if l.isClosed() {
		return GroupState{}, false, ErrClosed
	}
	s, ok := l.groups[0].fsm.groupState(group)
	return s, ok, nil
}

// WaitGroupChange blocks until this node has applied a generation of
// group above gen, or ctx ends.
func (l *Log) WaitGroupChange(ctx context.Context, group string, gen uint64) error {
	if l.isClosed() {
		return ErrClosed
	}
	f := l.groups[0].fsm
	return l.waitUntil(ctx, &f.appSig, func() bool {
		s, ok := f.groupState(group)
		return ok && s.Generation > gen
	})
}

// groupCall runs a group operation on raft group 0's leader, wherever it
// is, until it has an outcome or ctx ends. Group operations are idempotent
// (a join, heartbeat or leave applied twice, a commit of the same offsets),
// so they are retried whatever the failure.
func (l *Log) groupCall(ctx context.Context, op *groupOp) (GroupState, error) {
	g := l.groups[0]
	enc := encodeGroupOp(nil, op)
	bo := backoff{}
	for {
		if l.isClosed() {
			return GroupState{}, ErrClosed
		}
		changed := g.leaderSig.wait()
		var st GroupState
		var err error
		addr, id := g.raft.LeaderWithID()
		switch {
		case id == raft.ServerID(l.cfg.NodeID):
			st, err = l.applyGroupOp(ctx, g, enc)
		case addr != "" && l.client != nil:
			var resp []byte
			resp, err = l.client.Call(ctx, string(addr), methodGroup, enc)
			if err != nil {
				err = &retryError{unknown: !errors.Is(err, mux.ErrClosed), cause: err}
			} else {
				st, err = decodeGroupReply(resp)
			}
		default:
			err = &retryError{cause: ErrNoLeader}
		}
		var re *retryError
		if !errors.As(err, &re) {
			return st, err
		}
		if ctx.Err() != nil {
			return GroupState{}, l.giveUp(ctx.Err(), re.unknown)
		}
		select {
		case <-changed:
			bo.reset()
		case <-bo.next():
		case <-ctx.Done():
			return GroupState{}, l.giveUp(ctx.Err(), re.unknown)
		case <-l.closing:
			return GroupState{}, ErrClosed
		}
	}
}

// applyGroupOp proposes an encoded group operation on this node, the
// leader of raft group 0, and waits for its outcome.
func (l *Log) applyGroupOp(ctx context.Context, g *group, enc []byte) (GroupState, error) {
	data := []byte{cmdGroup}
	data = binary.AppendVarint(data, time.Now().UnixNano())
	data = append(data, enc...)
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	fut := g.raft.Apply(data, timeout)
	if err := fut.Error(); err != nil {
		return GroupState{}, classifyApplyError(err)
	}
	out, ok := fut.Response().(groupOutcome)
	if !ok {
		return GroupState{}, fmt.Errorf("raftlog: group operation applied with response %T", fut.Response())
	}
	return out.State, out.Err
}

// serveGroup runs a forwarded group operation if this node leads group 0.
func (l *Log) serveGroup(ctx context.Context, enc []byte) []byte {
	g := l.groups[0]
	if g.raft.State() != raft.Leader {
		return []byte{replyNotLeader}
	}
	d := decoder{b: enc}
	d.groupOp()
	if d.err != nil || len(d.b) != 0 {
		return appendString([]byte{replyError}, "raftlog: undecodable group operation")
	}
	st, err := l.applyGroupOp(ctx, g, enc)
	return encodeGroupReply(st, err)
}

func encodeGroupReply(st GroupState, err error) []byte {
	var re *retryError
	var sge *StaleGenerationError
	switch {
	case err == nil:
		return encodeGroupState([]byte{replyOK}, &st)
	case errors.As(err, &re):
		if re.unknown {
			return []byte{replyUnknown}
		}
		return []byte{replyNotLeader}
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return []byte{replyUnknown}
	case errors.As(err, &sge):
		b := []byte{replyStale}
		b = appendString(b, sge.Group)
		b = appendString(b, sge.Member)
		b = binary.AppendUvarint(b, uint64(sge.Partition))
		b = binary.AppendUvarint(b, sge.Generation)
		b = binary.AppendUvarint(b, sge.Current)
		return appendString(b, sge.Owner)
	case errors.Is(err, ErrUnknownMember):
		return appendString([]byte{replyUnknownMember}, err.Error())
	default:
		return appendString([]byte{replyError}, err.Error())
	}
}

func decodeGroupReply(b []byte) (GroupState, error) {
	d := decoder{b: b}
	var st GroupState
	var err error
	switch d.byte() {
	case replyOK:
		st = d.groupState()
	case replyNotLeader, replyUnknown:
		err = retryReply(b[0])
	case replyStale:
		err = &StaleGenerationError{Group: d.string(), Member: d.string(), Partition: int(d.uvarint()), Generation: d.uvarint(), Current: d.uvarint(), Owner: d.string()}
	case replyUnknownMember:
		err = &remoteError{sentinel: ErrUnknownMember, msg: d.string()}
	case replyError:
		err = errors.New(d.string())
	default:
		d.fail()
	}
	if d.err != nil {
		return GroupState{}, &retryError{unknown: true, cause: fmt.Errorf("raftlog: undecodable reply: %w", d.err)}
	}
	return st, err
}

// encodeGroupState is a group's state on the wire: its name, then the
// stored form of the group.
func encodeGroupState(b []byte, s *GroupState) []byte {
	g := &cgroup{generation: s.Generation, members: map[string]*cmember{}, parts: s.Partitions}
	for _, m := range s.Members {
		g.members[m.ID] = &cmember{session: int64(m.SessionTimeout), lastSeen: m.LastSeen.UnixNano()}
	}
	return encodeCGroup(appendString(b, s.Group), g)
}

func (d *decoder) groupState() GroupState {
	name := d.string()
	if d.err != nil {
		return GroupState{}
	}
	g, err := decodeCGroup(d.b)
	d.b = nil
	if err != nil {
		d.err = err
		return GroupState{}
	}
	return g.state(name)
}
