package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/wait"
	"github.com/stretchr/testify/require"
)

// startApp runs the service in this process on dir until the returned
// stop is called; it returns the HTTP address and how long it took to
// serve.
func startApp(t *testing.T, dir string) (string, time.Duration, func()) {
	t.Helper()
	addr, _, took, stop := startAppWith(t, config{data: dir})
	return addr, took, stop
}

// startAppWith is startApp with a config of the test's (cfg.http is
// always 127.0.0.1:0), and returns the service too.
func startAppWith(t *testing.T, cfg config) (string, *app, time.Duration, func()) {
	t.Helper()
	cfg.http = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	type started struct {
		addr string
		a    *app
	}
	startc := make(chan started, 1)
	done := make(chan error, 1)
	begin := time.Now()
	go func() {
		done <- run(ctx, cfg, func(addr string, a *app) { startc <- started{addr, a} })
	}()
	var st started
	select {
	case st = <-startc:
	case err := <-done:
		cancel()
		t.Fatalf("service stopped: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("service did not start")
	}
	took := time.Since(begin)
	return st.addr, st.a, took, func() {
		cancel()
		require.NoError(t, <-done)
	}
}

// The single-node default starts on an empty directory within a few
// seconds, and a restart keeps every order and every view.
func TestSingleNodeRestartKeepsEverything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	addr, took, stop := startApp(t, dir)
	t.Logf("empty directory: serving after %v", took)
	require.Less(t, took, 5*time.Second)
	base := "http://" + addr
	var ids []string
	for i := 0; i < 20; i++ {
		var res struct{ ID string }
		code, err := call("POST", base+"/orders", "", map[string]any{"customer": "ann", "items": []map[string]any{{"sku": "a", "qty": 1, "price_cents": 500}}}, &res)
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, code)
		ids = append(ids, res.ID)
		if i%2 == 0 {
			code, err = call("POST", base+"/orders/"+res.ID+"/pay", "", map[string]any{"amount_cents": 500}, nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)
		}
	}
	want := statsView{Orders: 20, Paid: 10, RevenueCents: 5000}
	wait.Until(t, 10*time.Second, "views", func() bool {
		var s statsView
		code, err := call("GET", base+"/views/stats", "", nil, &s)
		return err == nil && code == 200 && s == want
	})
	stop()

	addr, took, stop = startApp(t, dir)
	defer stop()
	t.Logf("restart: serving after %v", took)
	base = "http://" + addr
	for i, id := range ids {
		var o struct{ Status string }
		code, err := call("GET", base+"/orders/"+id, "", nil, &o)
		require.NoError(t, err)
		require.Equal(t, 200, code)
		require.Equal(t, map[bool]string{true: "paid", false: "placed"}[i%2 == 0], o.Status, fmt.Sprint("order ", i))
		var v orderView
		code, err = call("GET", base+"/views/orders/"+id, "", nil, &v)
		require.NoError(t, err)
		require.Equal(t, 200, code, "the view kept order %d", i)
	}
	var s statsView
	code, err := call("GET", base+"/views/stats", "", nil, &s)
	require.NoError(t, err)
	require.Equal(t, 200, code)
	require.Equal(t, want, s, "the stats view is kept as it was")
}
