package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/wait"
)

// TestBackupRestoreProcesses: the service runs as three processes and
// takes orders; `esraft backup` copies a node meanwhile; `esraft restore`
// makes three new nodes of a new cluster from it, started as processes
// at new addresses. Every partition of the new cluster holds, below the
// backup's heads, exactly the events of the old one (digests of the
// admin API's answers), and the new cluster has another ID.
func TestBackupRestoreProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service and the CLI and runs six processes")
	}
	dir := t.TempDir()
	bin, cli := buildBinary(t, dir, "orders", "."), buildBinary(t, dir, "esraft", "../../cmd/esraft")
	const token = "e2e-token"
	extra := func(string) []string { return []string{"-admin-token", token} }
	oldDir, newDir := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	require.NoError(t, os.MkdirAll(oldDir, 0o700))
	require.NoError(t, os.MkdirAll(newDir, 0o700))
	old, _ := startThree(t, bin, oldDir, extra)
	status := func(p *proc) (admin.Status, error) {
		var st admin.Status
		out, _, err := runCLI(cli, p.http, token, "status", "--json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &st)
		}
		return st, err
	}
	leader := func(procs []*proc) {
		wait.Until(t, 60*time.Second, "a leader every node sees", func() bool {
			for _, p := range procs {
				if st, err := status(p); err != nil || st.Shards[0].Leader == "" {
					return false
				}
			}
			return true
		})
	}
	leader(old)

	// Orders placed through every node until told to stop.
	var placed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				code, err := call("POST", "http://"+old[i%3].http+"/orders", id, map[string]any{
					"id": id, "customer": "c", "items": []map[string]any{{"sku": "book", "qty": 1, "price_cents": 100}}}, nil)
				if err == nil && code != http.StatusCreated {
					err = fmt.Errorf("order %s: HTTP %d", id, code)
				}
				if err != nil {
					errs <- err
					return
				}
				placed.Add(1)
			}
		}()
	}
	wait.Until(t, 60*time.Second, "200 orders placed", func() bool { return placed.Load() >= 200 })
	file := filepath.Join(dir, "orders.backup")
	out, errOut, err := runCLI(cli, old[1].http, token, "backup", "--out", file, "--json")
	require.NoError(t, err, errOut)
	require.Contains(t, errOut, "(100%)")
	var info raftlog.BackupInfo
	require.NoError(t, json.Unmarshal([]byte(out), &info))
	atBackup := placed.Load()
	wait.Until(t, 60*time.Second, "100 orders more after the backup", func() bool { return placed.Load() >= atBackup+100 })
	close(stop)
	wg.Wait()
	close(errs)
	require.NoError(t, <-errs)
	t.Logf("%d orders placed, %d when the backup was taken; backup heads %v", placed.Load(), atBackup, info.Heads)

	// Three new nodes from the backup, at new addresses.
	cluster := []string{freePort(t), freePort(t), freePort(t)}
	var peers []string
	for i, a := range cluster {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	clusterID := ""
	for i := range cluster {
		args := []string{"restore", "--from", file, "--dir", filepath.Join(newDir, fmt.Sprintf("n%d", i+1), "log"),
			"--node", fmt.Sprintf("n%d", i+1), "--peers", strings.Join(peers, ","), "--json"}
		if clusterID != "" {
			args = append(args, "--cluster-id", clusterID)
		}
		out, errOut, err := runCommand(cli, args...)
		require.NoError(t, err, errOut)
		var res struct {
			ClusterID string `json:"cluster_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		clusterID = res.ClusterID
	}
	require.NotEqual(t, info.ClusterID, clusterID)
	restored := startNodes(t, bin, newDir, cluster, extra)
	leader(restored)
	for _, p := range restored {
		st, err := status(p)
		require.NoError(t, err)
		require.Equal(t, clusterID, st.ClusterID)
	}

	// Every partition, below the backup's head, is the same on the old
	// cluster and on each new node.
	for part, head := range info.Heads {
		want, n := partitionDigest(t, old[0].http, token, part, head)
		require.Equal(t, int(head), n, "partition %d: the old cluster holds every offset below the head", part)
		for i, p := range restored {
			got, _ := partitionDigest(t, p.http, token, part, head)
			require.Equal(t, want, got, "partition %d on new node n%d", part, i+1)
		}
	}
	// The new cluster takes orders.
	code, err := call("POST", "http://"+restored[0].http+"/orders", "after-restore", map[string]any{
		"id": "after-restore", "customer": "c", "items": []map[string]any{{"sku": "book", "qty": 1, "price_cents": 100}}}, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, code)
}

// partitionDigest is a SHA-256 of the admin API's JSON of partition
// part's events below offset end on the node at addr, and their number.
func partitionDigest(t *testing.T, addr, token string, part int, end uint64) (string, int) {
	t.Helper()
	h := sha256.New()
	n := 0
	for from := uint64(0); from < end; {
		req, err := http.NewRequest("GET", fmt.Sprintf("http://%s/admin/partitions/%d/events?from=%d&limit=500", addr, part, from), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var page admin.EventPage
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		if len(page.Events) == 0 {
			break
		}
		for _, ev := range page.Events {
			if ev.Offset >= end {
				return fmt.Sprintf("%x", h.Sum(nil)), n
			}
			b, err := json.Marshal(ev)
			require.NoError(t, err)
			h.Write(b)
			h.Write([]byte(strconv.Itoa(n)))
			n++
		}
		from = page.Next
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n
}
