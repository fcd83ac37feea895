package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/systemtest/wait"
	"github.com/stretchr/testify/require"
)

// The end-to-end test: the service as a user runs it, three processes on
// 127.0.0.1, one of them killed with SIGKILL mid-way and restarted.

// freePort returns a 127.0.0.1 address, free a moment ago, for a node
// process to listen on. A port the kernel picks (listening on port 0) can
// be picked again, for another listener or an outgoing connection, here or
// in another package's tests running beside these, before the node binds
// it: a node whose HTTP port was another node's cluster port answered
// with a connection reset (CI, once). So the port is drawn below the
// kernel's ephemeral range, where it picks none, and never twice in this
// process.
func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(ephemeralLow()-20000)
		if portsUsed[port] {
			continue
		}
		portsUsed[port] = true
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken by something else
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// ephemeralLow is the lowest port the kernel picks by itself
// (ip_local_port_range; 32768 if unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low <= 21000 {
		return 32768
	}
	return low
}

type proc struct {
	args []string
	http string
	cmd  *exec.Cmd
	log  *os.File
}

func (p *proc) start(t *testing.T, bin string) {
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	require.NoError(t, cmd.Start())
	p.cmd = cmd
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
}

// call makes an HTTP request and decodes a JSON answer into out (if set).
func call(method, url, key string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %q: %w", data, err)
		}
	}
	return resp.StatusCode, nil
}

type webhookLog struct {
	mu   sync.Mutex
	keys map[string]map[string]int // "order/event" -> idempotency key -> deliveries
}

func (w *webhookLog) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var n notification
	if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	k := n.OrderID + "/" + n.Event
	if w.keys[k] == nil {
		w.keys[k] = map[string]int{}
	}
	w.keys[k][r.Header.Get("Idempotency-Key")]++
}

func TestEndToEndThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service and runs three processes")
	}
	bin := buildBinary(t, t.TempDir(), "orders", ".")

	hooks := &webhookLog{keys: map[string]map[string]int{}}
	receiver := httptest.NewServer(hooks)
	defer receiver.Close()

	dir := t.TempDir()
	// The cluster runs with mutual TLS, as cluster.sh runs it.
	ca, err := nodecert.NewCA("orders", time.Hour)
	require.NoError(t, err)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, nodecert.WriteFile(caFile, ca.PEM))
	procs, _ := startThree(t, bin, dir, func(id string) []string {
		cert, key, err := ca.Issue(nodecert.Identity{Cluster: "orders", Role: nodecert.Voter, NodeID: id}, time.Hour)
		require.NoError(t, err)
		certFile, keyFile := filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
		require.NoError(t, nodecert.WriteFile(certFile, cert))
		require.NoError(t, nodecert.WriteFile(keyFile, key))
		return []string{"-notify-url", receiver.URL,
			"-tls-cluster", "orders", "-tls-cert", certFile, "-tls-key", keyFile, "-tls-ca", caFile}
	})
	waitServing(t, procs)

	// retry sends a request until it gets an answer from the service,
	// across the other live nodes; a 503 or a dropped connection is retried
	// with the same Idempotency-Key.
	live := func() []*proc {
		var out []*proc
		for _, p := range procs {
			if p.cmd != nil {
				out = append(out, p)
			}
		}
		return out
	}
	retry := func(first int, method, path, key string, body, out any) int {
		deadline := time.Now().Add(60 * time.Second)
		for i := first; ; i++ {
			ps := live()
			p := ps[i%len(ps)]
			code, err := call(method, "http://"+p.http+path, key, body, out)
			if err == nil && code != http.StatusServiceUnavailable && code != http.StatusInternalServerError {
				return code
			}
			require.True(t, time.Now().Before(deadline), "%s %s: no answer (last %d %v)", method, path, code, err)
			time.Sleep(100 * time.Millisecond)
		}
	}

	const orders = 60
	var acked []string
	paid := map[string]bool{}
	// The victim is the leader: the hardest node to lose.
	victim := waitLeader(t, procs)
	for i := 0; i < orders; i++ {
		if i == orders/2 {
			procs[victim].kill() // SIGKILL, mid-way
		}
		var res struct {
			ID      string `json:"id"`
			Version int    `json:"version"`
		}
		code := retry(i, "POST", "/orders", fmt.Sprintf("place-%d", i), map[string]any{
			"customer": fmt.Sprintf("c%d", i%5), "items": []map[string]any{{"sku": "book", "qty": 1 + i%3, "price_cents": 1000}},
		}, &res)
		require.Equal(t, http.StatusCreated, code, "place order %d", i)
		acked = append(acked, res.ID)
		if i%2 == 0 {
			amount := (1 + i%3) * 1000
			code = retry(i+1, "POST", "/orders/"+res.ID+"/pay", "", map[string]any{"amount_cents": amount}, nil)
			// A retried payment whose first attempt went through is refused
			// as a second payment: it is paid either way.
			require.Contains(t, []int{http.StatusOK, http.StatusConflict}, code, "pay order %d", i)
			paid[res.ID] = true
		}
	}
	procs[victim].start(t, bin)

	// Every acknowledged order is readable on every node.
	for _, p := range procs {
		for _, id := range acked {
			wait.Until(t, 60*time.Second, "order "+id+" on "+p.http, func() bool {
				var o struct{ Status string }
				code, err := call("GET", "http://"+p.http+"/orders/"+id, "", nil, &o)
				return err == nil && code == 200 && (o.Status == "paid") == paid[id]
			})
		}
	}
	// Every node's stats converge to the same totals.
	want := statsView{Orders: orders, Paid: int64(len(paid))}
	for i := 0; i < orders; i += 2 {
		want.RevenueCents += int64((1 + i%3) * 1000)
	}
	for _, p := range procs {
		wait.Until(t, 60*time.Second, "stats on "+p.http, func() bool {
			var s statsView
			code, err := call("GET", "http://"+p.http+"/views/stats", "", nil, &s)
			return err == nil && code == 200 && s == want
		})
	}
	// Every payment was notified at least once, each with a single ID.
	wait.Until(t, 60*time.Second, "every notification", func() bool {
		hooks.mu.Lock()
		defer hooks.mu.Unlock()
		for id := range paid {
			if len(hooks.keys[id+"/OrderPaid"]) == 0 {
				return false
			}
		}
		return true
	})
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	redelivered := 0
	for k, ids := range hooks.keys {
		require.Len(t, ids, 1, "notification %s came with %d different IDs", k, len(ids))
		for _, n := range ids {
			redelivered += n - 1
		}
	}
	t.Logf("%d orders (%d paid) through 3 nodes with the leader n%d killed mid-way; %d notifications, %d redelivered with the same ID",
		orders, len(paid), victim+1, len(hooks.keys), redelivered)
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// waitReady waits until the node serving HTTP at addr answers /readyz with
// 200; on a timeout it fails t with what the node last answered (its
// problems: no leader, behind, damaged), which tells a slow machine from
// a node that cannot become ready.
func waitReady(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	last := "no answer"
	deadline := time.Now().Add(timeout)
	for {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not ready after %v; it last answered: %s", addr, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
