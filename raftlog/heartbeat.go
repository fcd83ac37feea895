package raftlog

import "github.com/hashicorp/raft"

// serialTransport is a node's raft transport without hashicorp/raft's
// heartbeat fast path: a heartbeat is handled on raft's main goroutine,
// like every other RPC.
//
// With the fast path, the transport's goroutine handles a heartbeat at
// once, and one of a newer term makes the node a follower of that term
// while its leader loop may be writing the entries it was asked to
// propose. Those entries then carry the new term, the new leader's log
// matches them, and the node applies them as committed although no quorum
// ever held them (hashicorp/raft#695, open upstream). The fault suite
// found it: a leader paused past an election resumed with requests queued,
// applied two of its own entries no other replica held, and, leading again
// later, spread that history (bug 16 in RELIABILITY.md). Without the fast
// path a heartbeat waits behind the main loop's work; a slow disk delays
// it, which the election timeout (1 s by default) absorbs.
type serialTransport struct{ *raft.NetworkTransport }

// SetHeartbeatHandler does not install the fast path: heartbeats reach
// raft through Consumer.
func (serialTransport) SetHeartbeatHandler(func(raft.RPC)) {}
