package raftlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/route"
)

// Leadership placement. Raft elects whichever voter times out first, so
// nothing spreads the leaders of S shards over the voters: after a restart
// the node that came back leads nothing, and a node that stops takes its
// shards' writes down until an election timeout. Two mechanisms fix that:
//
//   - handOff: Close first probes the other voters and asks every shard
//     this node leads to transfer leadership to the voter that answered,
//     follows it and holds most of the shard's log (raft's
//     LeadershipTransferToServer: it catches the target up, then tells it
//     to start an election at once), and waits, within
//     Config.HandoffTimeout in all, for each shard to name a new leader.
//   - the balancer: a goroutine that, every Config.BalanceInterval, checks
//     whether this node leads more than ceil(S / voters) shards and if so
//     transfers one of them to the voter that leads fewest, after probing
//     it: it must be running, follow this node in that shard and hold
//     nearly all of its log (raft then catches it up the rest of the way
//     before it hands over). One transfer per interval, so leader views
//     settle between two moves; only the node over its share moves
//     leaders, so nodes never trade a shard back and forth.

// balanceMaxLag is how many entries a target may lack, when probed, and
// still receive a shard's leadership: raft holds back writes while it
// catches the target up, so a far-behind node must first catch up by
// replication.
const balanceMaxLag = 1024

// balancer is the goroutine that moves leaders; one per Log with a network
// and more than one shard.
type balancer struct {
	stop   chan struct{}
	done   chan struct{}
	paused atomic.Bool // tests: hold off balancing
}

// startBalancer starts the balancer unless there is nothing to balance or
// Config.BalanceInterval is negative.
func (l *Log) startBalancer() {
	if l.mux == nil || len(l.shards) < 2 || l.cfg.BalanceInterval < 0 {
		return
	}
	b := &l.balance
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(b.done)
		defer cancel()
		for {
			// Jitter, so that nodes started together do not check in step.
			d := l.cfg.BalanceInterval + rand.N(l.cfg.BalanceInterval/4+1)
			t := time.NewTimer(d)
			select {
			case <-b.stop:
				t.Stop()
				return
			case <-t.C:
			}
			if !b.paused.Load() {
				l.balanceOnce(ctx, b.stop)
			}
		}
	}()
}

// stopBalancer stops the balancer and waits for it.
func (l *Log) stopBalancer() {
	if b := &l.balance; b.stop != nil {
		close(b.stop)
		<-b.done
	}
}

// balanceOnce transfers the leadership of one shard this node leads in
// excess of its share to a voter that leads fewer, if there is one that
// is fit to take it. It reports whether it made a transfer.
func (l *Log) balanceOnce(ctx context.Context, stop <-chan struct{}) bool {
	self := raft.ServerID(l.cfg.NodeID)
	voters := l.commonVoters()
	if _, ok := voters[self]; !ok || len(voters) < 2 {
		return false
	}
	share := (len(l.shards) + len(voters) - 1) / len(voters)
	leads := map[raft.ServerID]int{}
	var led []*shard
	for _, s := range l.shards {
		_, id := s.Raft.LeaderWithID()
		if s.Raft.State() == raft.Leader {
			led = append(led, s)
			id = self
		}
		if id != "" {
			leads[id]++
		}
	}
	if len(led) <= share {
		return false
	}
	var targets []raft.ServerID
	for id := range voters {
		if id != self && leads[id] < share {
			targets = append(targets, id)
		}
	}
	slices.SortFunc(targets, func(a, b raft.ServerID) int {
		if d := leads[a] - leads[b]; d != 0 {
			return d
		}
		return compareIDs(a, b)
	})
	reason := fmt.Sprintf("balance: leads %d of %d shards, share %d", len(led), len(l.shards), share)
	for _, target := range targets {
		s := l.fitTarget(ctx, led, target, voters[target])
		if s == nil {
			continue
		}
		err := l.transferLeadership(s, target, voters[target], reason, stop)
		return err == nil
	}
	return false
}

func compareIDs(a, b raft.ServerID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// commonVoters are the voters of every shard, with their addresses.
// Membership changes apply to all shards in turn, so a node being added or
// removed is a voter of some shards only for a moment, and is left out.
func (l *Log) commonVoters() map[raft.ServerID]raft.ServerAddress {
	var out map[raft.ServerID]raft.ServerAddress
	for _, s := range l.shards {
		cf := s.Raft.GetConfiguration()
		if cf.Error() != nil {
			return nil
		}
		here := map[raft.ServerID]raft.ServerAddress{}
		for _, srv := range cf.Configuration().Servers {
			if srv.Suffrage == raft.Voter && (out == nil || out[srv.ID] != "") {
				here[srv.ID] = srv.Address
			}
		}
		out = here
	}
	return out
}

// fitTarget probes target and returns a shard of led that it can take
// over at once: it follows this node in that shard and lacks at most
// balanceMaxLag of its entries. Nil if there is none, or the probe fails.
func (l *Log) fitTarget(ctx context.Context, led []*shard, target raft.ServerID, addr raft.ServerAddress) *shard {
	pctx, cancel := context.WithTimeout(ctx, max(l.cfg.BalanceInterval, time.Second))
	defer cancel()
	st, err := l.router.Probe(pctx, string(addr))
	if err != nil {
		l.logger.Debug("raftlog: balance: probe failed", "node", string(target), "err", err)
		return nil
	}
	if st.NodeID != string(target) || len(st.Shards) != len(l.shards) {
		return nil
	}
	for i := len(led) - 1; i >= 0; i-- {
		s := led[i]
		ts := st.Shards[s.ID]
		if ts.LeaderID == l.cfg.NodeID && ts.LastIndex+balanceMaxLag >= s.Raft.LastIndex() {
			return s
		}
	}
	return nil
}

// transferLeadership moves the leadership of s to target, logging why,
// and waits for raft's outcome or stop.
func (l *Log) transferLeadership(s *shard, target raft.ServerID, addr raft.ServerAddress, reason string, stop <-chan struct{}) error {
	l.logger.Info("raftlog: transferring leadership", "shard", s.ID, "from", l.cfg.NodeID, "to", string(target), "reason", reason)
	f := s.Raft.LeadershipTransferToServer(target, addr)
	errc := make(chan error, 1)
	// Raft resolves the future within about two election timeouts, or at
	// shutdown; stop does not wait for it.
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		if err != nil {
			err = fmt.Errorf("raftlog: transfer leadership of shard %d to %s: %w", s.ID, target, err)
			l.logger.Info("raftlog: leadership transfer failed", "shard", s.ID, "from", l.cfg.NodeID, "to", string(target), "reason", reason, "err", err)
		}
		return err
	case <-stop:
		return ErrClosed
	}
}

// handOff hands the leadership of every shard this node leads to another
// voter before Close stops raft, within Config.HandoffTimeout in all.
// Failures are logged only: Close goes on as it would without hand-off.
func (l *Log) handOff() {
	if l.cfg.HandoffTimeout < 0 || l.mux == nil || l.router == nil || !l.router.IsRunning() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.HandoffTimeout)
	defer cancel()
	self := raft.ServerID(l.cfg.NodeID)
	var led []*shard
	for _, s := range l.shards {
		if s.Raft != nil && s.Raft.State() == raft.Leader && hasOtherVoter(s.Raft, self) {
			led = append(led, s)
		}
	}
	if len(led) == 0 {
		return
	}
	peers := l.probeVoters(ctx, min(l.cfg.HandoffTimeout/4, 500*time.Millisecond))
	var wg sync.WaitGroup
	for _, s := range led {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.handOffShard(ctx, s, peers)
		}()
	}
	wg.Wait()
}

// probedVoter is a voter's answer to a probe.
type probedVoter struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	state route.NodeState
}

// probeVoters probes the other voters at once, within timeout, and returns
// those that answered as themselves and running every shard.
func (l *Log) probeVoters(ctx context.Context, timeout time.Duration) []probedVoter {
	var ids []raft.ServerID
	var addrs []string
	for id, addr := range l.commonVoters() {
		if string(id) != l.cfg.NodeID {
			ids = append(ids, id)
			addrs = append(addrs, string(addr))
		}
	}
	var out []probedVoter
	for i, a := range l.router.ProbeAll(ctx, addrs, timeout) {
		if a.Err != nil || a.State.NodeID != string(ids[i]) || len(a.State.Shards) != len(l.shards) {
			continue
		}
		out = append(out, probedVoter{id: ids[i], addr: raft.ServerAddress(addrs[i]), state: a.State})
	}
	return out
}

// handOffShard transfers the leadership of s to the voter, among peers,
// that follows this node in s and holds most of its log (or, if none
// answered, to the one raft deems most up to date), and waits until this
// node knows the new leader, the transfer fails, or ctx ends.
func (l *Log) handOffShard(ctx context.Context, s *shard, peers []probedVoter) {
	self := l.cfg.NodeID
	start := time.Now()
	var best *probedVoter
	for i, p := range peers {
		ps := p.state.Shards[s.ID]
		if ps.LeaderID == self && (best == nil || ps.LastIndex > best.state.Shards[s.ID].LastIndex) {
			best = &peers[i]
		}
	}
	var f raft.Future
	if best != nil {
		l.logger.Info("raftlog: transferring leadership", "shard", s.ID, "from", self, "to", string(best.id), "reason", "close")
		f = s.Raft.LeadershipTransferToServer(best.id, best.addr)
	} else {
		l.logger.Info("raftlog: transferring leadership", "shard", s.ID, "from", self, "to", "the most up-to-date voter", "reason", "close")
		f = s.Raft.LeadershipTransfer()
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }() // resolved by raft by its shutdown at the latest
	for {
		changed := s.LeaderWait() // before the check, so no change is missed
		if _, id := s.Raft.LeaderWithID(); id != "" && string(id) != self {
			l.logger.Info("raftlog: transferred leadership", "shard", s.ID, "from", self, "to", string(id), "reason", "close", "took", time.Since(start))
			return
		}
		select {
		case err := <-errc:
			// A transfer the balancer started is still running: wait for it.
			if err != nil && !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				l.logger.Info("raftlog: leadership hand-off failed", "shard", s.ID, "from", self, "reason", "close",
					"err", fmt.Errorf("raftlog: hand off shard %d: %w", s.ID, err))
				return
			}
			errc = nil
		case <-changed:
		case <-ctx.Done():
			l.logger.Info("raftlog: leadership hand-off timed out", "shard", s.ID, "from", self, "reason", "close", "after", time.Since(start))
			return
		}
	}
}

// hasOtherVoter reports whether r's configuration has a voter besides self.
func hasOtherVoter(r *raft.Raft, self raft.ServerID) bool {
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, srv := range cf.Configuration().Servers {
		if srv.ID != self && srv.Suffrage == raft.Voter {
			return true
		}
	}
	return false
}
