package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// ReadBarrier waits until this node has applied everything raft group g's
// leader had applied when the call reached it (after the leader confirmed
// it still leads), so reads on this node then see every write
// acknowledged before ReadBarrier was called, whichever node took it. On
// the leader it costs one round of heartbeats; on a follower one call to
// the leader and the wait for its own apply.
func (l *Log) ReadBarrier(ctx context.Context, g int) error {
	if g < 0 || g >= len(l.groups) {
		return fmt.Errorf("%w: raft group %d", ErrUnknownPartition, g)
	}
	grp := l.groups[g]
	bo := backoff{}
	for {
		if l.isClosed() {
			return ErrClosed
		}
		changed := grp.leaderSig.wait()
		addr, id := grp.raft.LeaderWithID()
		var index uint64
		var err error
		switch {
		case id == raft.ServerID(l.cfg.NodeID):
			index, err = l.leaderReadIndex(grp)
		case addr != "" && l.client != nil:
			var resp []byte
			resp, err = l.client.Call(ctx, string(addr), methodReadIndex, binary.AppendUvarint(nil, uint64(g)))
			if err == nil {
				index, err = decodeReadIndexReply(resp)
			}
		default:
			err = ErrNoLeader
		}
		if err == nil {
			return l.WaitApplied(ctx, Position{Group: g, Index: index})
		}
		if ctx.Err() != nil {
			return l.giveUp(ctx.Err(), false)
		}
		select {
		case <-changed:
			bo.reset()
		case <-bo.next():
		case <-ctx.Done():
			return l.giveUp(ctx.Err(), false)
		case <-l.closing:
			return ErrClosed
		}
	}
}

// leaderReadIndex confirms leadership and returns the applied index.
func (l *Log) leaderReadIndex(grp *group) (uint64, error) {
	if err := grp.raft.VerifyLeader().Error(); err != nil {
		return 0, err
	}
	return grp.fsm.applied.Load(), nil
}

func (l *Log) serveReadIndex(payload []byte) []byte {
	d := decoder{b: payload}
	g := int(d.uvarint())
	if d.err != nil || g < 0 || g >= len(l.groups) {
		return appendString([]byte{replyError}, "raftlog: bad read index request")
	}
	grp := l.groups[g]
	if grp.raft.State() != raft.Leader {
		return []byte{replyNotLeader}
	}
	index, err := l.leaderReadIndex(grp)
	if err != nil {
		return []byte{replyNotLeader}
	}
	return binary.AppendUvarint([]byte{replyOK}, index)
}

func decodeReadIndexReply(b []byte) (uint64, error) {
	d := decoder{b: b}
	switch d.byte() {
	case replyOK:
		index := d.uvarint()
		return index, d.err
	case replyNotLeader:
		return 0, ErrNoLeader
	case replyError:
		return 0, errors.New(d.string())
	}
	return 0, errCorrupt
}
