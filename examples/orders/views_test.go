package main

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/systemtest/wait"
	"github.com/stretchr/testify/require"
)

// Events whose amounts overflow a view's sums, appended past the commands
// (as an older version or another writer could have), are parked by the
// views: /views/stats and the order's row keep being served, with the
// sums of the events that fit, before and after a rebuild.
func TestViewsSurviveOverflowingEvents(t *testing.T) {
	addr, a, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data"), adminToken: "t0ken"})
	defer stop()
	base := "http://" + addr
	ctx := context.Background()
	appendEvent := func(typ string, v any) {
		data, err := json.Marshal(v)
		require.NoError(t, err)
		_, err = a.store.Append(ctx, "order-huge", eventstore.Any, []eventstore.EventData{{Type: typ, Data: data}})
		require.NoError(t, err)
	}
	const max = math.MaxInt64
	appendEvent("OrderPlaced", OrderPlaced{Customer: "x", Items: []Item{{SKU: "a", Qty: 1, PriceCents: max}}, TotalCents: max})
	appendEvent("OrderPaid", OrderPaid{AmountCents: max})
	appendEvent("OrderPaid", OrderPaid{AmountCents: max}) // revenue and paid_cents would overflow
	// An order placed after them is counted: the views go on.
	code, err := call("POST", base+"/orders", "", map[string]any{"id": "small", "customer": "ann", "items": []map[string]any{{"sku": "a", "qty": 1, "price_cents": 5}}}, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, code)

	want := statsView{Orders: 2, Paid: 1, RevenueCents: max}
	check := func(when string) {
		t.Helper()
		for _, name := range []string{"orders", "stats"} {
			wait.Until(t, 30*time.Second, name+" view parks the overflowing event "+when, func() bool {
				parked, err := a.projections[name].Parked(ctx)
				require.NoError(t, err)
				return len(parked) == 1
			})
			parked, _ := a.projections[name].Parked(ctx)
			require.Equal(t, "order-huge", parked[0].Stream)
			require.Contains(t, parked[0].Error, "sum of cents out of the int64 range")
		}
		wait.Until(t, 10*time.Second, "stats "+when, func() bool {
			var s statsView
			code, err := call("GET", base+"/views/stats", "", nil, &s)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code, "/views/stats "+when)
			return s == want
		})
		var o orderView
		code, err := call("GET", base+"/views/orders/huge", "", nil, &o)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, int64(max), o.PaidCents)
	}
	check("live")

	for _, name := range []string{"orders", "stats"} {
		code, _, _ := send(t, "POST", base+"/admin/projections/"+name+"/rebuild", "", map[string]string{"Authorization": "Bearer t0ken"})
		require.Equal(t, http.StatusAccepted, code)
	}
	for _, name := range []string{"orders", "stats"} {
		waitRebuilt(t, a.projections[name])
	}
	check("after a rebuild")
}

func waitRebuilt(t *testing.T, p *projection.Local) {
	t.Helper()
	done, rebuildErr := p.RebuildDone()
	if done == nil {
		return
	}
	select {
	case <-done:
		require.NoError(t, rebuildErr())
	case <-time.After(60 * time.Second):
		t.Fatal("rebuild did not finish")
	}
}
