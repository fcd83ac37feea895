package client_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/systemtest/faulttest"
	"github.com/esraft/esraft/systemtest/faulttest/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// member is a consumer group member process: faultnode -client, a thin
// client running projection.Group that records every grant, handling and
// commit in its directory.
type member struct {
	id, dir string
	cmd     *exec.Cmd
	exited  chan struct{}
}

func startMember(t *testing.T, c *faulttest.Cluster, id string, node int, session time.Duration) *member {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	ready := dir + ".ready"
	args := []string{"-client", joinAddrs(addrsFrom(c, node)), "-id", id, "-dir", dir, "-ready", ready,
		"-group-session", session.String(), "-log-level", "warn"}
	cmd := exec.Command(nodeBinary(t), args...)
	logf, err := os.Create(dir + ".log")
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	m := &member{id: id, dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(m.exited)
	}()
	t.Cleanup(m.kill)
	wait.Until(t, 60*time.Second, id+" ready", func() bool {
		select {
		case <-m.exited:
			t.Fatalf("%s exited while starting (see %s.log)", id, dir)
		default:
		}
		_, err := os.Stat(ready)
		return err == nil
	})
	return m
}

func (m *member) kill() {
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
}

func joinAddrs(addrs []string) string {
	out := addrs[0]
	for _, a := range addrs[1:] {
		out += "," + a
	}
	return out
}

// records reads a member's record file.
func (m *member) records(t *testing.T) []wire.ConsumerRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(m.dir, wire.ConsumerRecordFile))
	require.NoError(t, err)
	defer f.Close()
	var out []wire.ConsumerRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r wire.ConsumerRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil { // a line cut by SIGKILL is left out
			out = append(out, r)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// owners maps each partition to its owner in gs.
func owners(gs eventstore.ConsumerGroupState) map[eventstore.Partition]string {
	out := map[eventstore.Partition]string{}
	for _, a := range gs.Partitions {
		out[a.Partition] = a.Owner
	}
	return out
}

// TestConsumerGroupOfThinClientProcesses runs a consumer group whose three
// members are thin clients in processes of their own, each connected to
// another node of a 3-process cluster, while events are appended: it
// SIGKILLs one member (its partitions must move within the session
// timeout), then the node another member is connected to, and checks that
// every appended event was handled at least once and the group committed
// every partition to its end.
func TestConsumerGroupOfThinClientProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-process cluster and 3 member processes")
	}
	const session = 2 * time.Second
	c := startProcesses(t)
	w := openClient(t, addrsFrom(c, 0), "writer")
	members := make([]*member, 3)
	for i := range members {
		members[i] = startMember(t, c, fmt.Sprintf("m%d", i), i, session)
	}
	var gs eventstore.ConsumerGroupState
	wait.Until(t, 30*time.Second, "three members sharing the partitions", func() bool {
		var ok bool
		var err error
		gs, ok, err = w.GroupState(wire.ConsumerGroup)
		require.NoError(t, err)
		if !ok || len(gs.Members) != 3 {
			return false
		}
		per := map[string]int{}
		for _, o := range owners(gs) {
			per[o]++
		}
		return len(per) == 3 && per[""] == 0
	})

	const total = 600
	appended := map[uuid.UUID]eventstore.AppendResult{}
	var moved time.Duration
	var nodeKilled time.Time
	for i := range total {
		switch i {
		case 200:
			// A member dies: its partitions go to the others once its
			// session expires.
			gone := members[1].id
			var held []eventstore.Partition
			for p, o := range owners(gs) {
				if o == gone {
					held = append(held, p)
				}
			}
			require.NotEmpty(t, held)
			killed := time.Now()
			members[1].kill()
			wait.Until(t, 3*session, "the killed member's partitions to move", func() bool {
				st, _, err := w.GroupState(wire.ConsumerGroup)
				require.NoError(t, err)
				now := owners(st)
				for _, p := range held {
					if now[p] == gone || now[p] == "" {
						return false
					}
				}
				return true
			})
			moved = time.Since(killed)
			t.Logf("member %s SIGKILLed: its %d partitions moved after %v (session %v)", gone, len(held), moved.Round(time.Millisecond), session)
		case 400:
			// The node member m2 is connected to dies; m2 fails over.
			require.NoError(t, c.Kill(2))
			nodeKilled = time.Now()
			t.Logf("node %d (m2's) SIGKILLed", 2)
		}
		id := uuid.New()
		appended[id] = appendRetrying(t, w, fmt.Sprintf("order-%d", i%17), []eventstore.EventData{{ID: id, Type: "Placed"}})
	}
	require.Less(t, moved, session+2*time.Second, "partitions move within the session timeout (and a heartbeat)")

	// The group catches up: every partition committed to its end.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, w.Barrier(ctx))
	heads := map[eventstore.Partition]uint64{}
	for p := range eventstore.Partition(w.Partitions()) {
		h, err := w.Head(p)
		require.NoError(t, err)
		heads[p] = h
	}
	wait.Until(t, 60*time.Second, "the group to commit every partition to its end", func() bool {
		st, _, err := w.GroupState(wire.ConsumerGroup)
		require.NoError(t, err)
		for _, a := range st.Partitions {
			if a.Committed < heads[a.Partition] || len(a.Parked) > 0 {
				return false
			}
		}
		return true
	})

	// Counted from the members' own records: every event handled at least
	// once, by whichever member held its partition.
	handled := map[uuid.UUID]int{}
	grants := map[string]int{}
	handlings, afterNodeKill := 0, 0
	for _, m := range members {
		for _, r := range m.records(t) {
			switch r.Kind {
			case wire.RecordHandle:
				handled[r.ID]++
				handlings++
				if r.Member == "m2" && r.Start > nodeKilled.UnixNano() {
					afterNodeKill++
				}
			case wire.RecordGrant:
				grants[r.Member]++
			}
		}
	}
	missing := 0
	for id := range appended {
		if handled[id] == 0 {
			missing++
		}
	}
	t.Logf("%d events appended, %d handled (%d handlings, %d redeliveries), %d never handled; grants per member %v; m2 handled %d after its node was killed",
		len(appended), len(handled), handlings, handlings-len(handled), missing, grants, afterNodeKill)
	require.Zero(t, missing, "every event handled at least once")
	for id := range handled {
		require.Contains(t, appended, id, "handled only events that were appended")
	}
	require.Positive(t, afterNodeKill, "m2 went on through another node")
}
