package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/systemtest/clitest"
	"github.com/esraft/esraft/systemtest/wait"
)

// TestCLIAgainstThreeNodes runs the esraft CLI, as an operator would,
// against the service running as three processes (plaintext cluster
// port on loopback, where membership changes are allowed without TLS).
func TestCLIAgainstThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service and the CLI and runs three processes")
	}
	streams := envInt(t, "ESRAFT_E2E_STREAMS", 10000)
	dir := t.TempDir()
	bin, cli := buildBinary(t, dir, "orders", "."), buildBinary(t, dir, "esraft", "../../cmd/esraft")
	const token = "e2e-token"
	procs, cluster := startThree(t, bin, dir, func(string) []string { return []string{"-admin-token", token} })
	// esraft runs the CLI against node i and returns its stdout; the
	// command must succeed.
	esraft := func(i int, args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(cli, procs[i].http, token, args...)
		require.NoError(t, err, "esraft %v: %s", args, errOut)
		return out
	}
	statusOf := func(i int) (admin.Status, error) {
		var st admin.Status
		out, _, err := runCLI(cli, procs[i].http, token, "status", "--json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &st)
		}
		return st, err
	}
	// status lists the three nodes, reachable, and the shard's leader.
	wait.Until(t, 60*time.Second, "three reachable nodes and a leader in esraft status", func() bool {
		st, err := statusOf(0)
		if err != nil || len(st.Nodes) != 3 || st.Shards[0].Leader == "" {
			return false
		}
		for _, n := range st.Nodes {
			if !n.Reachable || n.Role != "voter" {
				return false
			}
		}
		return true
	})
	table := esraft(0, "status")
	require.Regexp(t, `(?m)^n1\s+voter`, table)
	require.Regexp(t, `(?m)^n3\s+voter`, table)

	// Orders through every node, concurrently: one stream each.
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= streams {
					return
				}
				p := procs[i%3]
				code, err := call("POST", "http://"+p.http+"/orders", fmt.Sprintf("k-%d", i), map[string]any{
					"id": strconv.Itoa(i), "customer": "c", "items": []map[string]any{{"sku": "book", "qty": 1, "price_cents": 100}}}, nil)
				if err == nil && code != 201 {
					err = fmt.Errorf("order %d: HTTP %d", i, code)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	require.NoError(t, <-errs)
	t.Logf("%d orders placed in %v", streams, time.Since(start))

	// The notifier consumer group catches up: its lag reaches 0.
	wait.Until(t, 120*time.Second, "the notifier group's lag to reach 0", func() bool {
		out, _, err := runCLI(cli, procs[1].http, token, "groups", "describe", "notifier", "--json")
		var g admin.Group
		return err == nil && json.Unmarshal([]byte(out), &g) == nil && g.Lag == 0 && len(g.Members) == 3
	})
	require.Regexp(t, `(?m)^notifier\s+\d+\s+3\s+0\s+0`, esraft(1, "groups", "ls"))
	// Its members are live: a reset is refused, naming them, and changes
	// nothing.
	_, errOut, err := runCLI(cli, procs[2].http, token, "groups", "reset", "notifier", "--to-earliest", "--yes")
	require.Equal(t, 1, exitCodeOf(err), errOut)
	require.Regexp(t, `consumer group "notifier" has live members \(n1, n2, n3\): stop them`, errOut)
	require.Regexp(t, `(?m)^notifier\s+\d+\s+3\s+0\s+0`, esraft(1, "groups", "ls"))

	// streams ls pages through every order stream (1,000 a page).
	start = time.Now()
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(esraft(2, "streams", "ls", "--prefix", "order-", "--limit", "1000", "--all")), "\n")[1:] {
		listed = append(listed, strings.Fields(line)[0])
	}
	t.Logf("streams ls --prefix order- --all listed %d streams in %v", len(listed), time.Since(start))
	require.Len(t, listed, streams)
	require.Equal(t, "order-0", listed[0])
	require.Equal(t, fmt.Sprintf("order-%d", streams-1), listed[streams-1])

	// A rebuild followed to its end.
	out := esraft(0, "projections", "rebuild", "orders", "--follow", "--interval", "100ms")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	clitest.CheckRebuildProgress(t, lines, 0)
	t.Logf("rebuild progress: %d lines, last %q", len(lines), lines[len(lines)-1])

	// cluster remove, then re-add, of a node: n3 is stopped, removed,
	// wiped, added back and restarted with its usual command; it catches
	// up and is a reachable voter again.
	procs[2].kill()
	esraft(0, "cluster", "remove", "n3")
	st, err := statusOf(0)
	require.NoError(t, err)
	require.Len(t, st.Nodes, 2)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "n3")))
	require.Contains(t, esraft(1, "cluster", "add", "n3", cluster[2]), "node n3 added as voter")
	procs[2].start(t, bin)
	wait.Until(t, 120*time.Second, "n3 back as a reachable voter that caught up", func() bool {
		st, err := statusOf(0)
		if err != nil || len(st.Nodes) != 3 {
			return false
		}
		for _, n := range st.Nodes {
			if !n.Reachable || n.Role != "voter" {
				return false
			}
		}
		for _, r := range st.Shards[0].Replicas {
			if r.Behind > 16 {
				return false
			}
		}
		return true
	})
	// n3 serves HTTP once its log opened (it rejoined and caught up).
	wait.Until(t, 120*time.Second, "n3 to serve order-"+strconv.Itoa(streams-1), func() bool {
		out, _, err := runCLI(cli, procs[2].http, token, "streams", "show", "order-"+strconv.Itoa(streams-1))
		return err == nil && regexp.MustCompile(`(?m)^version\s+1`).MatchString(out)
	})

	// Errors an operator meets: a wrong token, an unknown group.
	_, errOut, err = runCLI(cli, procs[0].http, "wrong", "status")
	require.Equal(t, exitCodeOf(err), 4, errOut)
	require.Contains(t, errOut, "the admin token is wrong")
	_, errOut, err = runCLI(cli, procs[0].http, token, "groups", "describe", "nope")
	require.Equal(t, exitCodeOf(err), 5, errOut)
	require.Contains(t, errOut, `consumer group "nope" does not exist`)
}

// runCLI runs the esraft binary against addr.
func runCLI(bin, addr, token string, args ...string) (string, string, error) {
	return runCommand(bin, append(args, "--addr", addr, "--token", token)...)
}

// runCommand runs bin with args and returns its stdout and stderr.
func runCommand(bin string, args ...string) (string, string, error) {
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func exitCodeOf(err error) int {
	if e, ok := err.(*exec.ExitError); ok {
		return e.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}
