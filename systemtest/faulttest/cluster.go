package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// ClusterConfig describes the nodes of a run.
type ClusterConfig struct {
	Binary     string // the faultnode binary (BuildNode)
	Dir        string // data, ready files and logs of every node
	Nodes      int
	Partitions int
	Groups     int
	// Raft timings and snapshot settings passed to every node.
	Heartbeat, Election, Lease time.Duration
	SnapshotThreshold          uint64
	SnapshotInterval           time.Duration
	TrailingLogs               uint64
	// ScrubInterval is the time between two passes of every node's state
	// scrub (0: raftlog's default, an hour).
	ScrubInterval time.Duration
	// GroupSession, if positive, makes every node run a member of the
	// consumer group with this session timeout (see ConsumerGroupWorkload).
	GroupSession time.Duration
	// DiskSize, if positive, gives every node a disk of its own: a tmpfs
	// of this many bytes mounted on its data directory (root only), which
	// the fill-disk fault fills. Close copies the data out to <id>.data
	// in Dir before unmounting.
	DiskSize int64
}

// Cluster runs the nodes as separate processes on 127.0.0.1 behind a
// Proxy, and kills, pauses and restarts them by process ID.
type Cluster struct {
	cfg   ClusterConfig
	Proxy *Proxy
	nodes []*Node
	log   func(format string, args ...any)

	unexpected func(Exit)
	spawn      chan spawnReq
	quit       chan struct{}
}

// Node is one node's process, as far as the cluster knows it.
type Node struct {
	Index int
	ID    string

	mu      sync.Mutex
	pid     int
	http    string
	paused  bool
	running bool
	exited  chan struct{} // closed when the current process has exited
	expect  bool          // the current process is being killed on purpose
	starts  int
	exit    string // how the last process ended ("" while it runs)
	mounted bool   // Dir/<ID> is a tmpfs the cluster mounted
}

// StartExitError is a node process that ended before it was ready: it
// refused to start (faultnode exits with status 1 when Open fails, after
// logging why) or it crashed (a panic, a fatal signal).
type StartExitError struct {
	Node    string
	Exit    string // the process's end, as os/exec reports it
	Crashed bool
	Reason  string // the node's last "faultnode failed" log line, if any
}

func (e *StartExitError) Error() string {
	what := "refused to start"
	if e.Crashed {
		what = "crashed while starting"
	}
	s := fmt.Sprintf("faulttest: %s %s (%s; see %s.log)", e.Node, what, e.Exit, e.Node)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Exit reports a node process that ended without being asked to.
type Exit struct {
	Node int
	PID  int
	Err  string
	At   time.Time
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// BuildNode compiles systemtest/faultnode into dir and returns its path.
func BuildNode(ctx context.Context, dir string) (string, error) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	}
	out := filepath.Join(dir, "faultnode")
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", out, "github.com/esraft/esraft/systemtest/faultnode")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("faulttest: go build faultnode: %w: %s", err, stderr.String())
	}
	return out, nil
}

// NewCluster prepares the proxy and node records; Start starts the nodes.
// unexpected receives every node exit the suite did not cause.
func NewCluster(cfg ClusterConfig, logf func(string, ...any), unexpected func(Exit)) (*Cluster, error) {
	px, err := NewProxy(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, Proxy: px, log: logf, spawn: make(chan spawnReq), quit: make(chan struct{})}
	for i := range cfg.Nodes {
		c.nodes = append(c.nodes, &Node{Index: i, ID: fmt.Sprintf("n%d", i+1)})
	}
	c.unexpected = unexpected
	if cfg.DiskSize > 0 {
		for _, n := range c.nodes {
			if err := mountTmpfs(filepath.Join(cfg.Dir, n.ID), cfg.DiskSize); err != nil {
				c.unmount()
				px.Close()
				return nil, err
			}
			n.mounted = true
		}
	}
	// Node processes are started from one goroutine locked to its thread
	// and die with it (Pdeathsig): if the test process dies, so do they.
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case r := <-c.spawn:
				r.done <- r.cmd.Start()
			case <-c.quit:
				return
			}
		}
	}()
	<-ready
	return c, nil
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// Node returns node i.
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// NodeDir is node i's data directory.
func (c *Cluster) NodeDir(i int) string { return filepath.Join(c.cfg.Dir, c.nodes[i].ID) }

func (c *Cluster) peers() string {
	var ps []string
	for i, n := range c.nodes {
		ps = append(ps, n.ID+"="+c.Proxy.Addr(i))
	}
	return strings.Join(ps, ",")
}

// Start starts node i on its data directory and waits until it serves.
func (c *Cluster) Start(ctx context.Context, i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		return fmt.Errorf("faulttest: %s already running", n.ID)
	}
	n.starts++
	n.mu.Unlock()
	dir := filepath.Join(c.cfg.Dir, n.ID)
	readyPath := filepath.Join(c.cfg.Dir, n.ID+".ready")
	os.Remove(readyPath)
	os.Remove(readyPath + ".listen")
	logf, err := os.OpenFile(filepath.Join(c.cfg.Dir, n.ID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "\n===== start %d at %s =====\n", n.starts, time.Now().Format(time.RFC3339Nano))
	args := []string{
		"-id", n.ID, "-dir", dir, "-advertise", c.Proxy.Addr(i), "-peers", c.peers(),
		"-source", SourceIP(i), "-ready", readyPath,
		"-partitions", fmt.Sprint(c.cfg.Partitions), "-groups", fmt.Sprint(c.cfg.Groups),
		"-heartbeat", c.cfg.Heartbeat.String(), "-election", c.cfg.Election.String(), "-lease", c.cfg.Lease.String(),
		"-snapshot-threshold", fmt.Sprint(c.cfg.SnapshotThreshold), "-snapshot-interval", c.cfg.SnapshotInterval.String(),
		"-trailing-logs", fmt.Sprint(c.cfg.TrailingLogs), "-scrub-interval", c.cfg.ScrubInterval.String(),
		"-group-session", c.cfg.GroupSession.String(),
		// Beside the data directory: a wipe or a full disk of the node
		// must not lose what its member did.
		"-consumer-records", c.consumerRecords(i),
		// What each entry decided, to find where a replica whose apply
		// digests differ parted from the others (digests.go).
		"-apply-trace", filepath.Join(c.cfg.Dir, n.ID+".applied"),
	}
	cmd := exec.Command(c.cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	req := spawnReq{cmd: cmd, done: make(chan error, 1)}
	select {
	case c.spawn <- req:
	case <-c.quit:
		logf.Close()
		return errors.New("faulttest: cluster closed")
	}
	if err := <-req.done; err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.pid, n.running, n.paused, n.expect, n.exited, n.http, n.exit = cmd.Process.Pid, true, false, false, exited, "", ""
	n.mu.Unlock()
	pid := cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		// A process that ends before it is ready is reported by Start
		// (StartExitError), which the caller judges.
		expected := n.expect || n.http == ""
		if n.pid == pid {
			n.running, n.paused, n.http = false, false, ""
			n.exit = "exit status 0"
			if err != nil {
				n.exit = err.Error()
			}
		}
		n.mu.Unlock()
		c.Proxy.SetBackend(i, "")
		close(exited)
		if !expected {
			msg := "exited"
			if err != nil {
				msg = err.Error()
			}
			c.log("UNEXPECTED EXIT of %s pid %d: %s (see %s.log)", n.ID, pid, msg, n.ID)
			if c.unexpected != nil {
				c.unexpected(Exit{Node: i, PID: pid, Err: msg, At: time.Now()})
			}
		}
	}()
	// Poll for the process's cluster address (written before it opens its
	// store, which needs its peers through the proxy), then for its ready
	// file.
	deadline := time.Now().Add(60 * time.Second)
	backend := false
	for {
		if !backend {
			if b, err := os.ReadFile(readyPath + ".listen"); err == nil {
				var r wire.Ready
				if json.Unmarshal(b, &r) == nil && r.PID == pid {
					c.Proxy.SetBackend(i, r.Cluster)
					backend = true
				}
			}
		}
		b, err := os.ReadFile(readyPath)
		if err == nil {
			var r wire.Ready
			if json.Unmarshal(b, &r) == nil && r.PID == pid {
				c.Proxy.SetBackend(i, r.Cluster)
				n.mu.Lock()
				n.http = r.HTTP
				n.mu.Unlock()
				return nil
			}
		}
		select {
		case <-exited:
			return c.startExit(n)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("faulttest: %s not ready after 60s", n.ID)
		}
	}
}

// startExit describes how node n's process ended while starting.
func (c *Cluster) startExit(n *Node) error {
	n.mu.Lock()
	e := &StartExitError{Node: n.ID, Exit: n.exit}
	n.mu.Unlock()
	// faultnode logs why Open failed and exits with status 1; anything
	// else (a Go panic exits with 2, a signal) is a crash.
	e.Crashed = e.Exit != "exit status 1"
	if b, err := os.ReadFile(filepath.Join(c.cfg.Dir, n.ID+".log")); err == nil {
		if i := bytes.LastIndex(b, []byte("===== start ")); i >= 0 {
			b = b[i:]
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(line, []byte("faultnode failed")) {
				e.Reason = string(line)
			}
		}
	}
	return e
}

// Wipe deletes everything in node i's data directory, which must not be
// running, as an operator recovering a damaged node does.
func (c *Cluster) Wipe(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	running := n.running
	n.mu.Unlock()
	if running {
		return fmt.Errorf("faulttest: wipe %s: it is running", n.ID)
	}
	return emptyDir(c.NodeDir(i))
}

// consumerRecords is the file node i's consumer member records to.
func (c *Cluster) consumerRecords(i int) string {
	return filepath.Join(c.cfg.Dir, c.nodes[i].ID+"."+wire.ConsumerRecordFile)
}

// Kill sends SIGKILL to node i's process and waits for it to exit.
func (c *Cluster) Kill(i int) error { return c.KillMany([]int{i}, nil) }

// KillMany sends SIGKILL to the processes of nodes idx, all of them before
// waiting for any to exit; sent, if not nil, runs once every signal is
// sent.
func (c *Cluster) KillMany(idx []int, sent func()) error {
	type victim struct {
		n      *Node
		pid    int
		exited chan struct{}
	}
	var vs []victim
	var errs []error
	for _, i := range idx {
		n := c.nodes[i]
		n.mu.Lock()
		if !n.running {
			n.mu.Unlock()
			continue
		}
		n.expect = true
		v := victim{n: n, pid: n.pid, exited: n.exited}
		n.mu.Unlock()
		if err := syscall.Kill(v.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("faulttest: kill %s pid %d: %w", n.ID, v.pid, err))
			continue
		}
		vs = append(vs, v)
	}
	if sent != nil {
		sent()
	}
	deadline := time.After(30 * time.Second)
	for _, v := range vs {
		select {
		case <-v.exited:
		case <-deadline:
			errs = append(errs, fmt.Errorf("faulttest: %s pid %d still running 30s after SIGKILL", v.n.ID, v.pid))
		}
	}
	return errors.Join(errs...)
}

// Pause sends SIGSTOP to node i's process.
func (c *Cluster) Pause(i int) error { return c.signal(i, syscall.SIGSTOP, true) }

// Resume sends SIGCONT to node i's process.
func (c *Cluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT, false) }

func (c *Cluster) signal(i int, sig syscall.Signal, paused bool) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return nil
	}
	if err := syscall.Kill(n.pid, sig); err != nil {
		return fmt.Errorf("faulttest: %v %s pid %d: %w", sig, n.ID, n.pid, err)
	}
	n.paused = paused
	return nil
}

// State reports node i's process ID, HTTP address, and whether it runs
// and is paused.
func (n *Node) State() (pid int, http string, running, paused bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pid, n.http, n.running, n.paused
}

// HTTP returns node i's API address, "" if it is not serving.
func (n *Node) HTTP() string {
	_, h, running, _ := n.State()
	if !running {
		return ""
	}
	return h
}

// Close kills every node and stops the proxy.
func (c *Cluster) Close() {
	for i, n := range c.nodes {
		n.mu.Lock()
		running := n.running
		n.mu.Unlock()
		if running {
			c.Kill(i)
		}
	}
	c.Proxy.Close()
	c.unmount()
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
}

// unmount copies every node's data out of its tmpfs (to <id>.data, kept
// with the run's logs) and unmounts it.
func (c *Cluster) unmount() {
	for _, n := range c.nodes {
		if !n.mounted {
			continue
		}
		dir := filepath.Join(c.cfg.Dir, n.ID)
		unfillDisk(dir)
		if out, err := exec.Command("cp", "-a", dir, filepath.Join(c.cfg.Dir, n.ID+".data")).CombinedOutput(); err != nil {
			c.log("copy %s out of its tmpfs: %v: %s", n.ID, err, out)
		}
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			c.log("unmount %s: %v", dir, err)
		}
		n.mounted = false
	}
}
