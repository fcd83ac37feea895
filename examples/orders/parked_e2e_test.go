package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/systemtest/wait"
)

// TestParkedAndResetAgainstThreeNodes operates the notifier consumer
// group of the three-process service with the esraft CLI, as an operator
// would. With the notifier outage drill switched on, two drill events are
// parked; parked ls lists them; one is skipped (parked skip), the outage
// is mended and the other retried (parked retry): it is notified, the
// skipped one never is, and the group counts one skip. Then every node is
// restarted without its notifier member, groups reset --to-earliest
// rewinds the stopped group, and once the members run again every event
// of the group is handled again, counted by the nodes' handlers.
func TestParkedAndResetAgainstThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service and the CLI and runs three processes")
	}
	dir := t.TempDir()
	bin, cli := buildBinary(t, dir, "orders", "."), buildBinary(t, dir, "esraft", "../../cmd/esraft")
	const token = "e2e-token"
	procs, _ := startThree(t, bin, dir, func(string) []string { return []string{"-admin-token", token} })
	waitServing(t, procs)
	esraft := func(i int, args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(cli, procs[i].http, token, args...)
		require.NoError(t, err, "esraft %v: %s", args, errOut)
		return out
	}
	describe := func() (admin.Group, bool) {
		out, _, err := runCLI(cli, procs[0].http, token, "groups", "describe", "notifier", "--json")
		var g admin.Group
		return g, err == nil && json.Unmarshal([]byte(out), &g) == nil
	}
	operator := func(method string, i int, path string, body, out any) int {
		t.Helper()
		b, err := json.Marshal(body)
		require.NoError(t, err)
		req, err := http.NewRequest(method, "http://"+procs[i].http+path, bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		if out != nil {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
		}
		return resp.StatusCode
	}
	outage := func(on bool) {
		for i := range procs {
			require.Equal(t, http.StatusOK, operator("PUT", i, "/drills/notifier/outage", map[string]bool{"on": on}, nil))
		}
	}
	wait.Until(t, 60*time.Second, "the notifier group with three members", func() bool {
		g, ok := describe()
		return ok && len(g.Members) == 3
	})

	// Paid orders: the notifier's usual work.
	const orders = 12
	for i := 0; i < orders; i++ {
		var res struct{ ID string }
		code, err := call("POST", "http://"+procs[i%3].http+"/orders", fmt.Sprintf("parked-%d", i), map[string]any{
			"customer": "c", "items": []map[string]any{{"sku": "book", "qty": 1, "price_cents": 500}}}, &res)
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, code)
		code, err = call("POST", "http://"+procs[(i+1)%3].http+"/orders/"+res.ID+"/pay", "", map[string]any{"amount_cents": 500}, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
	}

	// Two drill events fail while the outage is on, and are parked.
	outage(true)
	var drills []drillAppended
	for i := 0; i < 2; i++ {
		var d drillAppended
		require.Equal(t, http.StatusCreated, operator("POST", i, "/drills/notifier", nil, &d))
		drills = append(drills, d)
	}
	var parked admin.ParkedList
	wait.Until(t, 60*time.Second, "both drill events parked", func() bool {
		out, _, err := runCLI(cli, procs[1].http, token, "parked", "ls", "--group", "notifier", "--json")
		return err == nil && json.Unmarshal([]byte(out), &parked) == nil && len(parked.Parked) == 2
	})
	table := esraft(1, "parked", "ls", "--group", "notifier")
	for _, d := range drills {
		require.Regexp(t, fmt.Sprintf(`(?m)^%d\s+%d\s+%s\s+5\s+notifier drill: the notifier outage switch`, d.Partition, d.Offset, d.Stream), table)
	}
	retried, skipped := drills[0], drills[1]

	out := esraft(0, "parked", "skip", fmt.Sprint(skipped.Partition), fmt.Sprint(skipped.Offset), "--group", "notifier", "--yes")
	require.Contains(t, out, "skip asked of its owner")
	wait.Until(t, 60*time.Second, "the skip carried out", func() bool {
		g, ok := describe()
		return ok && g.Skipped == 1 && g.Parked == 1
	})
	outage(false)
	out = esraft(1, "parked", "retry", fmt.Sprint(retried.Partition), fmt.Sprint(retried.Offset), "--group", "notifier")
	require.Contains(t, out, "retry asked of its owner")
	wait.Until(t, 60*time.Second, "the retried event handled and the group caught up", func() bool {
		g, ok := describe()
		return ok && g.Parked == 0 && g.Lag == 0 && g.Skipped == 1
	})
	// The retried drill was notified, by the node that owns its
	// partition; the skipped one never was.
	wait.Until(t, 30*time.Second, "the retried drill's notification written", func() bool {
		return slices.Contains(notifiedKeys(t, dir), retried.Stream)
	})
	require.NotContains(t, notifiedKeys(t, dir), skipped.Stream)

	// Reset: stop every member (each node restarted with -no-notifier),
	// rewind the group, start the members again: every event of the
	// group is handled again, counted by the nodes' handlers (their
	// counts start at 0 with the processes).
	restartAll := func(extra ...string) {
		for _, p := range procs {
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			_, err := p.cmd.Process.Wait()
			require.NoError(t, err)
			p.cmd = nil
			p.args = append(slices.DeleteFunc(p.args, func(a string) bool { return a == "-no-notifier" }), extra...)
			p.start(t, bin)
			waitReady(t, p.http, 2*time.Minute)
		}
	}
	restartAll("-no-notifier")
	wait.Until(t, 30*time.Second, "no live member", func() bool {
		g, ok := describe()
		return ok && len(g.Members) == 0
	})
	out = esraft(2, "groups", "reset", "notifier", "--to-earliest", "--yes")
	require.Regexp(t, `group notifier reset to earliest: generation \d+, lag \d+, parked 0`, out)
	// The reset went through node 3; describe asks node 1, which applies
	// it a moment later.
	wait.Until(t, 30*time.Second, "every partition rewound, as node 1 sees the group", func() bool {
		g, ok := describe()
		if !ok || len(g.Partitions) == 0 {
			return false
		}
		for _, p := range g.Partitions {
			if p.Committed != 0 {
				return false
			}
		}
		return true
	})
	want := uint64(orders + len(drills)) // the group's events: OrderPaid and drills
	restartAll()
	handled := func() int64 {
		var total int64
		for _, p := range procs {
			var st struct {
				Handled int64 `json:"notifier_handled"`
			}
			code, err := call("GET", "http://"+p.http+"/status", "", nil, &st)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)
			total += st.Handled
		}
		return total
	}
	wait.Until(t, 60*time.Second, "every event of the group handled again", func() bool {
		g, ok := describe()
		return ok && len(g.Members) == 3 && g.Lag == 0 && handled() >= int64(want)
	})
	t.Logf("after the reset: %d events of the group, %d handler calls on the three nodes", want, handled())
}

// notifiedKeys are the message keys (streams) in the nodes'
// notifications files.
func notifiedKeys(t *testing.T, dir string) []string {
	t.Helper()
	var keys []string
	for i := 1; i <= 3; i++ {
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d", i), "notifications.jsonl"))
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var m struct {
				Key string `json:"key"`
			}
			if line != "" && json.Unmarshal([]byte(line), &m) == nil {
				keys = append(keys, m.Key)
			}
		}
	}
	return keys
}
