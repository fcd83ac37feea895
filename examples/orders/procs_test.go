package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// buildBinary builds package pkg into dir and returns the binary's path.
func buildBinary(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Stderr = os.Stderr
	require.NoError(t, build.Run(), "build %s", pkg)
	return bin
}

// envInt is the integer in environment variable name, def if unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "$%s", name)
	return n
}

// startThree starts three service processes n1..n3 from bin, with data
// and logs in dir, bootstrapped together: each gets -data, -http, -node,
// -addr and -peers, plus what extra returns for its ID. It returns the
// processes (killed at the test's end) and their cluster addresses.
func startThree(t *testing.T, bin, dir string, extra func(id string) []string) ([]*proc, []string) {
	t.Helper()
	cluster := []string{freePort(t), freePort(t), freePort(t)}
	return startNodes(t, bin, dir, cluster, extra), cluster
}

// startNodes is startThree at the given cluster addresses, node i being
// n<i+1>; it returns the processes.
func startNodes(t *testing.T, bin, dir string, cluster []string, extra func(id string) []string) []*proc {
	t.Helper()
	var peers []string
	for i, addr := range cluster {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addr))
	}
	procs := make([]*proc, len(cluster))
	for i := range procs {
		id := fmt.Sprintf("n%d", i+1)
		logf, err := os.Create(filepath.Join(dir, id+".log"))
		require.NoError(t, err)
		t.Cleanup(func() {
			if t.Failed() {
				logTail(t, logf.Name(), 80)
			}
			logf.Close()
		})
		p := &proc{http: freePort(t), log: logf}
		p.args = append([]string{"-data", filepath.Join(dir, id), "-http", p.http,
			"-node", id, "-addr", cluster[i], "-peers", strings.Join(peers, ",")}, extra(id)...)
		procs[i] = p
		p.start(t, bin)
		t.Cleanup(p.kill)
	}
	return procs
}

// waitServing waits until every process answers /status.
func waitServing(t *testing.T, procs []*proc) {
	t.Helper()
	for _, p := range procs {
		wait.Until(t, 60*time.Second, "node "+p.http+" serving", func() bool {
			code, err := call("GET", "http://"+p.http+"/status", "", nil, nil)
			return err == nil && code == 200
		})
	}
}

// waitLeader returns the index of the process leading shard 0, waiting
// for one.
func waitLeader(t *testing.T, procs []*proc) int {
	t.Helper()
	leader := -1
	wait.Until(t, 30*time.Second, "a leader", func() bool {
		for i, p := range procs {
			var st struct {
				Shards []struct{ State string } `json:"shards"`
			}
			if code, err := call("GET", "http://"+p.http+"/status", "", nil, &st); err == nil && code == 200 && len(st.Shards) > 0 && st.Shards[0].State == "Leader" {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// logTail prints the last n lines of a node's log into the test's
// output: a failed test's node logs are otherwise lost with its
// temporary directory.
func logTail(t *testing.T, path string, n int) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("%s: %v", path, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("the last %d lines of %s:\n%s", len(lines), filepath.Base(path), strings.Join(lines, "\n"))
}
