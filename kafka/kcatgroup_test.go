package kafka

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// kcatMember is a running `kcat -G` consumer whose output lines are
// collected.
type kcatMember struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startKcatMember(t *testing.T, srv *Server, group, topic string) *kcatMember {
	t.Helper()
	cmd := exec.Command(needKcat(t), "-b", srv.Addr(), "-u", "-G", group, "-f", "%p %o %s\n",
		"-X", "session.timeout.ms=3000", "-X", "heartbeat.interval.ms=300",
		"-X", "auto.commit.interval.ms=100", "-X", "auto.offset.reset=earliest", topic)
	if os.Getenv("KCAT_DEBUG") != "" {
		f, _ := os.Create(os.Getenv("KCAT_DEBUG") + "." + group + fmt.Sprint(time.Now().UnixNano()))
		cmd.Stderr = f
		cmd.Args = append(cmd.Args[:1], append([]string{"-d", "fetch,cgrp,topic"}, cmd.Args[1:]...)...)
	}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	m := &kcatMember{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, sc.Text())
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-m.done
		cmd.Wait()
	})
	return m
}

func (m *kcatMember) got() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lines...)
}

// values are the record values a member printed, and the partitions
// it read them from.
func values(lines []string) (map[string]int, map[string]bool) {
	vals, parts := map[string]int{}, map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 3 {
			vals[f[2]]++
			parts[f[0]] = true
		}
	}
	return vals, parts
}

// committed returns the group's committed offsets as this server holds them.
func committed(srv *Server, group string) map[topicPartition]int64 {
	srv.groups.mu.Lock()
	g := srv.groups.groups[group]
	srv.groups.mu.Unlock()
	out := map[topicPartition]int64{}
	if g == nil {
		return out
	}
	g.offMu.Lock()
	defer g.offMu.Unlock()
	for k, v := range g.offsets {
		out[k] = v.Offset
	}
	return out
}

func TestKcatGroupSplitsAndResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("two consumer processes and a session expiry")
	}
	srv, _ := startServer(t, func(c *Config) { c.DefaultPartitions = 4 })
	kcat(t, srv, "", "-L", "-t", "shared") // creates it
	a := startKcatMember(t, srv, "g1", "shared")
	b := startKcatMember(t, srv, "g1", "shared")
	// Records are produced once both members share the partitions, so
	// that the first cannot read them all before the second joins.
	waitFor(t, 20*time.Second, func() bool {
		srv.groups.mu.Lock()
		defer srv.groups.mu.Unlock()
		g := srv.groups.groups["g1"]
		return g != nil && g.state == groupStable && len(g.members) == 2
	}, func() string { return "the group never had two members" })
	var in strings.Builder
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&in, "key%d:a%d\n", i, i)
	}
	kcat(t, srv, in.String(), "-P", "-t", "shared", "-K", ":")
	// Both members read, from distinct partitions, every record once,
	// and commit what they read.
	waitFor(t, 20*time.Second, func() bool {
		va, pa := values(a.got())
		vb, pb := values(b.got())
		if len(pa) == 0 || len(pb) == 0 || len(va)+len(vb) != 40 {
			return false
		}
		for p := range pa {
			if pb[p] {
				return false
			}
		}
		var sum int64
		for _, o := range committed(srv, "g1") {
			sum += o
		}
		return sum == 40
	}, func() string {
		return fmt.Sprintf("a: %v\nb: %v\ncommitted: %v", a.got(), b.got(), committed(srv, "g1"))
	})
	va, _ := values(a.got())
	vb, _ := values(b.got())
	for v := range va {
		require.Zero(t, vb[v], "record %s read by both members", v)
	}

	// a is killed; b takes over its partitions from their committed
	// offsets: it reads every new record and none of the old ones again.
	require.NoError(t, a.cmd.Process.Kill())
	before := len(b.got())
	in.Reset()
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&in, "key%d:b%d\n", i, i)
	}
	kcat(t, srv, in.String(), "-P", "-t", "shared", "-K", ":")
	waitFor(t, 20*time.Second, func() bool {
		vals, _ := values(b.got()[before:])
		return len(vals) == 40
	}, func() string { return fmt.Sprintf("b: %v", b.got()) })
	vals, parts := values(b.got()[before:])
	require.Len(t, parts, 4, "b owns every partition after a was killed")
	for v, n := range vals {
		require.True(t, strings.HasPrefix(v, "b"), "b read %s again after the takeover", v)
		require.Equal(t, 1, n, "b read %s twice", v)
	}
}
