package faulttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/esraft/esraft/internal/backoff"
)

// Fault kinds.
const (
	FaultKillLeader      = "kill-leader"
	FaultKillNode        = "kill-node"
	FaultKillNodeLong    = "kill-node-long" // down long enough for the leader to compact past it
	FaultKillAll         = "kill-all"
	FaultPauseLeader     = "pause-leader"
	FaultPauseNode       = "pause-node"
	FaultIsolateLeader   = "isolate-leader"     // leader | the other two
	FaultPartitionRandom = "partition-minority" // a random node | the other two
	FaultCutLink         = "cut-link"           // one link down, both ends still reach the third

	// Disk faults (disk.go): a random node is killed, its files damaged,
	// and it is restarted with its original command. A node that refuses
	// to start (or crashes) is recovered as documented: its data
	// directory wiped, then restarted with the same command, so that it
	// rejoins as a new incarnation.
	FaultCorruptLogOld = "corrupt-log-old" // bytes flipped in the oldest raft log segment's first half (applied entries)
	FaultCorruptLogNew = "corrupt-log-new" // bytes flipped in the last 4 KiB written to the newest segment
	FaultCorruptState  = "corrupt-state"   // bytes flipped in a state engine file
	FaultTruncateLog   = "truncate-log"    // the newest raft log segment cut within its written half
	FaultTruncateState = "truncate-state"  // a state engine file cut within its second half
	// FaultFillDisk fills a running node's disk (its tmpfs,
	// ClusterConfig.DiskSize) for a while, then frees it.
	FaultFillDisk = "fill-disk"
	// FaultWipeNode is issue #16's first scenario: one node paused while
	// the other two acknowledge appends, those two killed, one of them
	// wiped, the paused one resumed, and both restarted with their
	// original command. The wiped node must rejoin, never vote for the
	// stale one with an empty log.
	FaultWipeNode = "wipe-node"
)

// Kinds returns every fault kind the nemesis knows.
func Kinds() []string {
	var ks []string
	for _, w := range faultWeights {
		ks = append(ks, w.kind)
	}
	return ks
}

// faultWeights is the nemesis's mix: process faults and network faults
// about equally, leader-targeted ones most.
var faultWeights = []struct {
	kind   string
	weight int
}{
	{FaultKillLeader, 4}, {FaultKillNode, 2}, {FaultKillNodeLong, 1}, {FaultKillAll, 1},
	{FaultPauseLeader, 3}, {FaultPauseNode, 1},
	{FaultIsolateLeader, 3}, {FaultPartitionRandom, 2}, {FaultCutLink, 2},
	{FaultCorruptLogOld, 1}, {FaultCorruptLogNew, 1}, {FaultCorruptState, 1},
	{FaultTruncateLog, 1}, {FaultTruncateState, 1}, {FaultFillDisk, 1}, {FaultWipeNode, 1},
}

// Fault is one injected fault, as logged.
type Fault struct {
	Seq   int
	Kind  string
	Nodes []int    // the nodes killed, paused or isolated; both ends of a cut link
	Mode  LinkMode // of a network fault
	// Group is the raft group whose leader a leader fault targets; -1 for
	// faults that target no group in particular.
	Group int
	Hold  time.Duration
	// Start is when the fault was injected, Healed when it was undone,
	// Recovered when every node ran again and agreed on a leader of every
	// group (zero if that did not happen within the deadline).
	Start, Healed, Recovered time.Time
	Err                      string
	// Detail says what a disk fault did (the file and bytes damaged, the
	// space filled); Outcome how the node took it: for damage "started",
	// "refused" or "crashed" (then ", wiped" once the documented recovery
	// ran), for a full disk whether the node kept running and served
	// reads.
	Detail, Outcome string
}

func (f Fault) String() string {
	var ns []string
	for _, n := range f.Nodes {
		ns = append(ns, fmt.Sprintf("n%d", n+1))
	}
	s := fmt.Sprintf("#%d %s [%s] hold %v", f.Seq, f.Kind, strings.Join(ns, ","), f.Hold.Round(time.Millisecond))
	if f.Group >= 0 {
		s += fmt.Sprintf(" (leader of group %d)", f.Group)
	}
	if f.Kind == FaultIsolateLeader || f.Kind == FaultPartitionRandom || f.Kind == FaultCutLink {
		s += " " + f.Mode.String()
	}
	if f.Detail != "" {
		s += ": " + f.Detail
	}
	if f.Outcome != "" {
		s += "; " + f.Outcome
	}
	return s
}

// nemesis injects seeded random faults, one at a time: inject, hold,
// heal, wait for the cluster to recover, stay quiet for a while.
type nemesis struct {
	c       *Cluster
	mon     *monitor
	rng     *rand.Rand
	groups  int
	logf    func(string, ...any)
	quiet   [2]time.Duration // min, max pause between faults
	recover time.Duration    // deadline for recovery after a heal
	kinds   []string         // restrict to these kinds (nil: all)
	// carrying is 1 + the node that runs with damage a disk fault left in
	// its files (it started anyway), 0 if none: until that node is wiped,
	// or every file damaged is gone (raft log segments are deleted once
	// compacted), disk faults damage only it. One disk damaged at a time is the fault
	// model a 3-node cluster tolerates: damage on two nodes and the third
	// wiped leaves no whole copy to rejoin from (the stopped run of seed
	// 20261137).
	carrying      int
	carryingFiles []string // the damaged files: their removal (log compaction) ends the damage too

	mu     sync.Mutex
	faults []Fault
}

func (n *nemesis) Faults() []Fault {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.faults)
}

func (n *nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
}

func (n *nemesis) pick() string {
	total := 0
	for _, w := range faultWeights {
		if n.kinds == nil || slices.Contains(n.kinds, w.kind) {
			total += w.weight
		}
	}
	x := n.rng.IntN(total)
	for _, w := range faultWeights {
		if n.kinds != nil && !slices.Contains(n.kinds, w.kind) {
			continue
		}
		if x < w.weight {
			return w.kind
		}
		x -= w.weight
	}
	panic("unreachable")
}

// run injects faults until ctx ends; every fault is healed before it
// returns.
func (n *nemesis) run(ctx context.Context) {
	for seq := 1; ; seq++ {
		if backoff.Sleep(ctx, n.between(n.quiet[0], n.quiet[1])) != nil {
			return
		}
		f := n.plan(seq)
		n.inject(&f)
		n.logf("nemesis: %s", f)
		_ = backoff.Sleep(ctx, f.Hold) // a cancelled run heals at once
		n.heal(&f)
		n.repairDamaged()
		rctx, cancel := context.WithTimeout(context.Background(), n.recover)
		err := awaitHealthy(rctx, n.c, n.mon, n.groups, true)
		cancel()
		if err != nil {
			f.Err = err.Error()
			n.logf("nemesis: %s NOT RECOVERED: %v", f, err)
			// No new fault on a cluster that has not recovered: a second
			// wipe or kill would only hide what went wrong with the first.
			for ctx.Err() == nil {
				n.repairDamaged()
				rctx, cancel := context.WithTimeout(ctx, n.recover)
				err := awaitHealthy(rctx, n.c, n.mon, n.groups, true)
				cancel()
				if err == nil {
					n.logf("nemesis: recovered late from %s", f)
					break
				}
				n.logf("nemesis: still not recovered from %s: %v; no new fault until it does", f, err)
			}
		} else {
			f.Recovered = time.Now()
			n.logf("nemesis: %s healed, recovered after %v", f, f.Recovered.Sub(f.Healed).Round(time.Millisecond))
		}
		n.mu.Lock()
		n.faults = append(n.faults, f)
		n.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

// plan draws the next fault from the seeded generator. Only the choice
// of a leader, and of the node a disk fault damages while one carries
// damage, depend on the run: every other draw is the same for a given
// seed.
func (n *nemesis) plan(seq int) Fault {
	f := Fault{Seq: seq, Kind: n.pick(), Group: -1}
	size := n.c.Size()
	randomNode := n.rng.IntN(size)
	group := n.rng.IntN(n.groups)
	if f.Kind == FaultKillLeader || f.Kind == FaultPauseLeader || f.Kind == FaultIsolateLeader {
		f.Group = group
	}
	mode := LinkDrop
	if n.rng.IntN(2) == 0 {
		mode = LinkBlackhole
	}
	other := (randomNode + 1 + n.rng.IntN(size-1)) % size
	leaderOr := func() int {
		if l := n.mon.leader(group); l >= 0 {
			return l
		}
		return randomNode
	}
	switch f.Kind {
	case FaultKillLeader:
		f.Nodes, f.Hold = []int{leaderOr()}, n.between(0, 2*time.Second)
	case FaultKillNode:
		f.Nodes, f.Hold = []int{randomNode}, n.between(0, 3*time.Second)
	case FaultKillNodeLong:
		f.Nodes, f.Hold = []int{randomNode}, n.between(8*time.Second, 12*time.Second)
	case FaultKillAll:
		for i := range size {
			f.Nodes = append(f.Nodes, i)
		}
		f.Hold = n.between(0, time.Second)
	case FaultPauseLeader:
		f.Nodes, f.Hold = []int{leaderOr()}, n.between(2500*time.Millisecond, 5*time.Second)
	case FaultPauseNode:
		f.Nodes, f.Hold = []int{randomNode}, n.between(2500*time.Millisecond, 5*time.Second)
	case FaultIsolateLeader:
		f.Nodes, f.Mode, f.Hold = []int{leaderOr()}, mode, n.between(2*time.Second, 6*time.Second)
	case FaultPartitionRandom:
		f.Nodes, f.Mode, f.Hold = []int{randomNode}, mode, n.between(2*time.Second, 6*time.Second)
	case FaultCutLink:
		f.Nodes, f.Mode, f.Hold = []int{randomNode, other}, mode, n.between(2*time.Second, 6*time.Second)
	case FaultCorruptLogOld, FaultCorruptLogNew, FaultCorruptState, FaultTruncateLog, FaultTruncateState:
		target := randomNode
		if n.carrying > 0 && !slices.ContainsFunc(n.carryingFiles, func(p string) bool {
			_, err := os.Stat(p)
			return !errors.Is(err, os.ErrNotExist)
		}) {
			n.carrying, n.carryingFiles = 0, nil
		}
		if n.carrying > 0 {
			target = n.carrying - 1
		}
		f.Nodes, f.Hold = []int{target}, n.between(0, 2*time.Second)
	case FaultFillDisk:
		f.Nodes, f.Hold = []int{randomNode}, n.between(3*time.Second, 8*time.Second)
	case FaultWipeNode:
		// Paused, wiped, the third (the suite runs three nodes).
		third := 3 - randomNode - other
		f.Nodes, f.Hold = []int{randomNode, other, third}, n.between(2*time.Second, 4*time.Second)
	}
	return f
}

func (n *nemesis) inject(f *Fault) {
	f.Start = time.Now()
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	switch f.Kind {
	case FaultKillLeader, FaultKillNode, FaultKillNodeLong, FaultKillAll:
		// The fault starts when the last signal is sent: a node killed
		// later than the others could acknowledge appends meanwhile.
		note(n.c.KillMany(f.Nodes, func() { f.Start = time.Now() }))
	case FaultPauseLeader, FaultPauseNode:
		note(n.c.Pause(f.Nodes[0]))
	case FaultIsolateLeader, FaultPartitionRandom:
		var rest []int
		for i := range n.c.Size() {
			if i != f.Nodes[0] {
				rest = append(rest, i)
			}
		}
		n.c.Proxy.Partition(f.Nodes, rest, f.Mode)
	case FaultCutLink:
		n.c.Proxy.Set(f.Nodes[0], f.Nodes[1], f.Mode)
	case FaultCorruptLogOld, FaultCorruptLogNew, FaultCorruptState, FaultTruncateLog, FaultTruncateState:
		note(n.c.KillMany(f.Nodes, func() { f.Start = time.Now() }))
		if len(errs) == 0 {
			var err error
			f.Detail, err = damage(f.Kind, n.c.NodeDir(f.Nodes[0]), n.rng)
			note(err)
		}
	case FaultFillDisk:
		filled, err := fillDisk(n.c.NodeDir(f.Nodes[0]))
		note(err)
		f.Detail = fmt.Sprintf("%d MiB filled", filled>>20)
	case FaultWipeNode:
		note(n.c.Pause(f.Nodes[0]))
	}
	if len(errs) > 0 {
		f.Err = strings.Join(errs, "; ")
	}
}

// heal undoes f: restarts killed nodes, resumes paused ones, brings every
// link up.
func (n *nemesis) heal(f *Fault) {
	switch f.Kind {
	case FaultKillLeader, FaultKillNode, FaultKillNodeLong, FaultKillAll:
		var wg sync.WaitGroup
		for _, i := range f.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := n.c.Start(ctx, i); err != nil {
					n.logf("nemesis: restart n%d: %v", i+1, err)
				}
			}()
		}
		wg.Wait()
	case FaultPauseLeader, FaultPauseNode:
		n.c.Resume(f.Nodes[0])
	case FaultCorruptLogOld, FaultCorruptLogNew, FaultCorruptState, FaultTruncateLog, FaultTruncateState:
		f.Outcome = n.restartDamaged(f.Nodes[0])
		if f.Outcome == "started" {
			n.carrying = f.Nodes[0] + 1
			if rel, _, ok := strings.Cut(f.Detail, ": "); ok {
				n.carryingFiles = append(n.carryingFiles, filepath.Join(n.c.NodeDir(f.Nodes[0]), rel))
			}
		}
	case FaultFillDisk:
		f.Outcome = n.healFullDisk(f.Nodes[0])
	case FaultWipeNode:
		f.Outcome = n.wipeAndRestart(f.Nodes)
	default:
		n.c.Proxy.Heal()
	}
	f.Healed = time.Now()
}

// wipe removes node i's data directory; the damage it carried goes with it.
func (n *nemesis) wipe(i int) error {
	err := n.c.Wipe(i)
	if err == nil && n.carrying == i+1 {
		n.carrying, n.carryingFiles = 0, nil
	}
	return err
}

// restartDamaged restarts node i, killed and damaged, with its original
// command; if it refuses to start (or crashes), it runs the documented
// recovery: wipe its data directory and restart it with the same command.
// It says what happened.
func (n *nemesis) restartDamaged(i int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := n.c.Start(ctx, i)
	if err == nil {
		return "started"
	}
	outcome := "start failed"
	var se *StartExitError
	if errors.As(err, &se) {
		outcome = "refused"
		if se.Crashed {
			outcome = "crashed"
		}
	} else if kerr := n.c.Kill(i); kerr != nil {
		// Not ready in time: stop it before the wipe.
		n.logf("nemesis: kill n%d: %v", i+1, kerr)
	}
	n.logf("nemesis: n%d %s: %v; wiping its data directory and restarting it with its original command", i+1, outcome, err)
	if err := n.wipe(i); err != nil {
		return fmt.Sprintf("%s, wipe failed: %v", outcome, err)
	}
	n.mon.forget(i)
	if err := n.c.Start(ctx, i); err != nil {
		return fmt.Sprintf("%s, wiped, restart failed: %v", outcome, err)
	}
	return outcome + ", wiped"
}

// healFullDisk checks that node i still serves reads on its full disk,
// then frees the space; a node that exited meanwhile is restarted as a
// damaged one.
func (n *nemesis) healFullDisk(i int) string {
	reads := "not running on the full disk"
	if addr := n.c.Node(i).HTTP(); addr != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		reads = "reads on the full disk served"
		if _, err := n.mon.cl.read(ctx, addr, 0, 0, 10); err != nil {
			reads = "reads on the full disk failed: " + err.Error()
		}
		cancel()
	}
	if err := unfillDisk(n.c.NodeDir(i)); err != nil {
		return reads + "; free the space: " + err.Error()
	}
	if _, _, running, _ := n.c.Node(i).State(); running {
		return reads + "; kept running"
	}
	return reads + "; exited, then " + n.restartDamaged(i)
}

// repairDamaged applies the documented recovery to every running node
// that reports damage in its state files (found on a read, by the scrub,
// or while sending a full copy, after the node started): stop it, wipe its
// data directory, and restart it with its original command, so that it
// rejoins and receives a full copy from a healthy peer.
//
// As an operator would, it repairs one node at a time, and only once the
// cluster is otherwise healthy (every node running, a voter, a leader
// known): the damaged node still votes (its raft log is intact), and
// wiping it while another node is still rejoining leaves one voter with
// data out of three, a shard that can never elect again (the 32-minute
// run of seed 20261134 did that: n3 wiped after a refused start, n1
// wiped for damage 44 ms later).
func (n *nemesis) repairDamaged() {
	for i := range n.c.Size() {
		addr := n.c.Node(i).HTTP()
		if addr == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.mon.cl.status(ctx, addr)
		cancel()
		if err != nil {
			continue
		}
		for g, gs := range st.Groups {
			if gs.Damage == "" {
				continue
			}
			rctx, cancel := context.WithTimeout(context.Background(), n.recover)
			err := awaitHealthy(rctx, n.c, n.mon, n.groups, true)
			cancel()
			if err != nil {
				n.logf("nemesis: n%d reports damage in group %d, repair deferred until the others recover: %v", i+1, g, err)
				return
			}
			n.logf("nemesis: n%d reports damage in group %d (%s): stopping it, wiping its data directory and restarting it with its original command", i+1, g, gs.Damage)
			if err := n.c.Kill(i); err != nil {
				n.logf("nemesis: kill n%d: %v", i+1, err)
			}
			if err := n.wipe(i); err != nil {
				n.logf("nemesis: wipe n%d: %v", i+1, err)
				break
			}
			n.mon.forget(i)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			if err := n.c.Start(ctx, i); err != nil {
				n.logf("nemesis: restart of wiped n%d failed: %v", i+1, err)
			}
			cancel()
			break
		}
	}
}

// wipeAndRestart runs the rest of FaultWipeNode: nodes are the paused
// one, the one to wipe and the third.
func (n *nemesis) wipeAndRestart(nodes []int) string {
	paused, wiped, third := nodes[0], nodes[1], nodes[2]
	errs := make([]error, 4)
	errs[2] = n.c.KillMany([]int{wiped, third}, nil)
	if errs[2] == nil {
		errs[3] = n.wipe(wiped)
	}
	n.mon.forget(wiped)
	n.c.Resume(paused)
	var wg sync.WaitGroup
	for k, i := range []int{wiped, third} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			errs[k] = n.c.Start(ctx, i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "failed: " + err.Error()
	}
	return fmt.Sprintf("n%d wiped and restarted with n%d while n%d, stale, resumed", wiped+1, third+1, paused+1)
}

// healAll undoes every fault there may be: used before the final checks.
func healAll(ctx context.Context, c *Cluster) error {
	c.Proxy.Heal()
	for i := range c.Size() {
		_, _, running, paused := c.Node(i).State()
		switch {
		case paused:
			c.Resume(i)
		case !running:
			if err := c.Start(ctx, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// awaitHealthy polls until every node runs, unpaused, and all of them
// name the same leader of every group; with voters, until also every node
// is a voter of every group in every node's view (a wiped node counts
// again only once it has caught up and been promoted).
func awaitHealthy(ctx context.Context, c *Cluster, mon *monitor, groups int, voters bool) error {
	cl := mon.cl
	for {
		ok, why := healthy(ctx, c, cl, groups, voters)
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy: %s", why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func healthy(ctx context.Context, c *Cluster, cl *client, groups int, voters bool) (bool, string) {
	leaders := make([]string, groups)
	for i := range c.Size() {
		_, addr, running, paused := c.Node(i).State()
		if !running || paused || addr == "" {
			return false, fmt.Sprintf("n%d not running", i+1)
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.status(sctx, addr)
		cancel()
		if err != nil {
			return false, fmt.Sprintf("n%d status: %v", i+1, err)
		}
		if len(st.Groups) != groups {
			return false, fmt.Sprintf("n%d reports %d groups", i+1, len(st.Groups))
		}
		for g, gs := range st.Groups {
			if gs.LeaderID == "" {
				return false, fmt.Sprintf("n%d knows no leader of group %d", i+1, g)
			}
			n := 0
			for _, srv := range gs.Servers {
				if srv.Voter {
					n++
				}
			}
			if voters && n != c.Size() {
				return false, fmt.Sprintf("n%d sees %d voters of group %d, not %d", i+1, n, g, c.Size())
			}
			if leaders[g] != "" && leaders[g] != gs.LeaderID {
				return false, fmt.Sprintf("group %d: leaders %s and %s", g, leaders[g], gs.LeaderID)
			}
			leaders[g] = gs.LeaderID
		}
	}
	return true, ""
}
