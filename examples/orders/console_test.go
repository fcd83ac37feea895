package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/systemtest/browser"
	"github.com/esraft/esraft/systemtest/wait"
)

// screenshots, if set, is where TestConsoleInBrowser writes the pictures
// of the console the README shows (docs/console: see the README).
var screenshots = flag.String("console.screenshots", "", "directory to write TestConsoleInBrowser's screenshots of the console to (PNG, 1280x800)")

// TestConsoleInBrowser drives the web console in headless Chromium against
// the service running as three processes, and checks on each page what
// the cluster holds: the cluster page's leader is /status's; a stream's
// events are shown in order with their data, and a causation ID links to
// the event it names; a consumer group's lag, held above 0, falls to 0
// once its events are handled; a partition's live tail shows new events, pauses and
// resumes; leadership is handed over from the leader's console; a reset
// of a group with live members is refused with the
// API's error shown; retrying a parked event, once its cause is gone,
// empties the list; a rebuild's progress bar reaches 100 %; the
// confirmation works from the keyboard; every page fits a narrow window;
// and no page reports an error.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the service, runs three processes and a browser")
	}
	b := browser.Start(t)
	dir := t.TempDir()
	bin := buildBinary(t, dir, "orders", ".")
	const token = "console-token"
	procs, cluster := startThree(t, bin, dir, func(string) []string { return []string{"-admin-token", token} })
	for _, p := range procs {
		waitReady(t, p.http, 2*time.Minute)
	}
	base := "http://" + procs[0].http
	shot := func(name string) {
		t.Helper()
		if *screenshots != "" {
			_, err := b.WaitJS(5*time.Second, `(window.scrollTo(0, 0), window.scrollY === 0)`)
			require.NoError(t, err)
			require.NoError(t, b.Screenshot(filepath.Join(*screenshots, name+".png")))
		}
	}
	js := func(timeout time.Duration, expr string) string {
		t.Helper()
		v, err := b.WaitJS(timeout, expr)
		require.NoError(t, err)
		return v
	}
	bearer := func(method, path string, out any) int {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
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
	order := func(id string, paid bool) {
		t.Helper()
		code, err := call("POST", base+"/orders", "", map[string]any{"id": id, "customer": "Ada Lovelace",
			"items": []map[string]any{{"sku": "notes-on-the-engine", "qty": 2, "price_cents": 1250}}}, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, code)
		if paid {
			code, err = call("POST", base+"/orders/"+id+"/pay", "", map[string]any{"amount_cents": 2500}, nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)
		}
	}

	// A thin client appends what the commands would refuse (below).
	ctx := context.Background()
	thin, err := client.Open(ctx, client.Config{Addrs: cluster, ID: "console-test"})
	require.NoError(t, err)
	defer thin.Close()

	require.NoError(t, b.SignIn(base, token))

	// Cluster: the leader shown is the one /status reports.
	wait.Until(t, 30*time.Second, "the cluster page shows /status's leader", func() bool {
		shown := js(10*time.Second, `document.querySelector('#shards tr[data-shard="0"] td.leader')?.textContent`)
		var st struct {
			Shards []struct{ Leader string } `json:"shards"`
		}
		code, err := call("GET", base+"/status", "", nil, &st)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		return len(st.Shards) > 0 && st.Shards[0].Leader != "" && shown == st.Shards[0].Leader
	})
	require.Equal(t, "3", js(10*time.Second, `document.querySelectorAll('#nodes tbody tr').length === 3 && '3'`))
	shot("cluster")

	// Streams: an order's events, in order, with their data.
	order("console-1", true)
	code, err := call("POST", base+"/orders/console-1/ship", "", nil, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, b.Navigate(base+"/ui/streams?mode=category&q=order"))
	require.Equal(t, "order-console-1", js(10*time.Second, `document.getElementById('main').dataset.renderedMs && document.querySelector('#streams tbody a')?.textContent`))
	require.NoError(t, b.ClickLoad(`#streams tbody a`))
	require.Equal(t, "1 OrderPlaced|2 OrderPaid|3 OrderShipped", js(10*time.Second,
		`document.querySelectorAll('.event').length === 3 && [...document.querySelectorAll('.event')].map(e => e.dataset.version + ' ' + e.querySelector('.type').textContent).join('|')`))
	placed := js(5*time.Second, `document.querySelector('.event .data').textContent`)
	require.Contains(t, placed, `"customer": "Ada Lovelace"`)
	require.Contains(t, placed, `"sku": "notes-on-the-engine"`)
	require.Contains(t, js(5*time.Second, `document.querySelectorAll('.event .data')[1].textContent`), `"amount_cents": 2500`)
	shot("stream")
	// A causation ID links to the event it names, in its own stream.
	placedID := js(5*time.Second, `document.querySelector('.event').id.replace('event-', '')`)
	_, err = thin.Append(ctx, "audit-console-1", eventstore.Any, []eventstore.EventData{{Type: "OrderAudited", Data: []byte(`{"ok":true}`),
		Metadata: eventstore.Metadata{CausationID: placedID, Headers: map[string]string{"auditor": "console-test"}}}})
	require.NoError(t, err)
	require.NoError(t, b.Navigate(base+"/ui/streams/audit-console-1"))
	require.Contains(t, js(10*time.Second, `document.querySelector('.event .metadata')?.textContent`), `"auditor": "console-test"`)
	require.NoError(t, b.ClickLoad(`.event .causation a`))
	require.Equal(t, "/ui/streams/order-console-1#event-"+placedID, js(10*time.Second,
		`location.pathname.startsWith('/ui/streams/') && document.activeElement.classList.contains('targeted') && location.pathname + '#' + document.activeElement.id`))

	// Consumer groups. A group of the test's own, whose one member (on the
	// thin client) holds every event until released: the page shows its
	// lag above 0, then falling to 0 once the events are handled, with
	// every committed offset at its head.
	for i := range 20 {
		order(fmt.Sprintf("console-lag-%d", i), true)
	}
	release := make(chan struct{})
	audit := projection.NewGroup(thin, "console-audit", "auditor-1", func(ctx context.Context, _ *sql.Tx, _ eventstore.Event) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, projection.GroupOptions{Options: projection.Options{Categories: []string{"order"}}})
	gctx, stopAudit := context.WithCancel(ctx)
	auditDone := make(chan error, 1)
	go func() { auditDone <- audit.Run(gctx) }()
	defer func() {
		stopAudit()
		require.NoError(t, <-auditDone)
	}()
	require.NoError(t, b.Navigate(base+"/ui/groups/console-audit"))
	js(30*time.Second, `Number(document.getElementById('group-lag').textContent) > 0 && document.querySelector('#members tbody th')?.textContent === 'auditor-1'`)
	close(release)
	js(60*time.Second, `document.getElementById('group-lag').textContent === '0' &&
		[...document.querySelectorAll('#group-partitions tbody tr')].every(r => r.querySelector('.committed').textContent === r.querySelector('.head').textContent)`)
	chart := js(5*time.Second, `(s => s.dataset.peak + ' ' + s.dataset.last)(document.querySelector('#lag-chart svg'))`)
	var peak, last int
	_, err = fmt.Sscan(chart, &peak, &last)
	require.NoError(t, err)
	require.Greater(t, peak, 0, "the chart drew the lag before the events were handled")
	require.Equal(t, 0, last, "and after")
	shot("group")

	// The service's notifier: handled, lag 0, its three members listed.
	require.NoError(t, b.Navigate(base+"/ui/groups/notifier"))
	js(60*time.Second, `document.getElementById('group-lag').textContent === '0' &&
		[...document.querySelectorAll('#group-partitions tbody tr')].every(r => r.querySelector('.committed').textContent === r.querySelector('.head').textContent) &&
		document.querySelectorAll('#members tbody th').length === 3`)
	// Keyboard: the first Tab reaches the skip link, shown on focus.
	require.NoError(t, b.Do(5*time.Second, chromedp.KeyEvent(kb.Tab)))
	require.Equal(t, "skip-link", js(5*time.Second, `document.activeElement.className === 'skip-link' && document.activeElement.getBoundingClientRect().left >= 0 && document.activeElement.className`))
	// Enter on the reset button opens the confirmation with the focus on
	// Cancel, shown by a focus outline; Escape closes it and nothing is
	// sent.
	require.NoError(t, b.Do(5*time.Second, chromedp.Focus(chromedp.ID("reset")), chromedp.KeyEvent(kb.Enter)))
	require.Equal(t, "confirm-cancel", js(5*time.Second, `document.getElementById('confirm').open && document.activeElement.id`))
	require.NotEqual(t, "none", js(5*time.Second, `getComputedStyle(document.activeElement).outlineStyle`))
	require.NoError(t, b.Do(5*time.Second, chromedp.KeyEvent(kb.Escape)))
	js(5*time.Second, `!document.getElementById('confirm').open && document.getElementById('error').hidden`)
	// A reset while members are live is refused, and the page says why.
	require.NoError(t, b.Click(`#reset`))
	require.NoError(t, b.Click(`#confirm-ok`))
	require.Contains(t, js(10*time.Second, `!document.getElementById('error').hidden && document.getElementById('error').textContent`), "has live members")

	// Partitions: the live tail shows an event appended after it opened,
	// pauses, and on resume goes on from where it paused.
	p := fmt.Sprint(int(thin.PartitionOf("order-console-tail-1")))
	require.NoError(t, b.Navigate(base+"/ui/partitions"))
	require.NoError(t, b.Click(`#partitions tr[data-partition="`+p+`"] button`))
	js(10*time.Second, `document.getElementById('tail-state').textContent === 'live'`)
	order("console-tail-1", false)
	js(20*time.Second, `[...document.querySelectorAll('#tail tbody td')].some(td => td.textContent === 'order-console-tail-1')`)
	require.NoError(t, b.Click(`#tail-pause`))
	require.Contains(t, js(5*time.Second, `document.getElementById('tail-state').textContent.startsWith('paused') && document.getElementById('tail-state').textContent`), "paused at offset")
	code, err = call("POST", base+"/orders/console-tail-1/pay", "", map[string]any{"amount_cents": 2500}, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, b.Click(`#tail-pause`))
	js(20*time.Second, `[...document.querySelectorAll('#tail tbody tr')].some(r => r.cells[1].textContent === 'order-console-tail-1' && r.cells[3].textContent === 'OrderPaid')`)

	// Projections: an event the stats view cannot take (its revenue would
	// leave the int64 range) is parked; once a later event has brought the
	// revenue down, retrying it from the page succeeds and the list is
	// empty. The events are appended past the commands, by a thin client,
	// as an older version or another writer could have.
	waitCaughtUp := func(name string) {
		wait.Until(t, 30*time.Second, name+" caught up on node 1", func() bool {
			var pr struct {
				Lag uint64 `json:"lag"`
			}
			return bearer("GET", "/admin/projections/"+name, &pr) == http.StatusOK && pr.Lag == 0
		})
	}
	waitCaughtUp("stats")
	var stats statsView
	code, err = call("GET", base+"/views/stats", "", nil, &stats)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	pay := func(stream string, cents int64) {
		t.Helper()
		data, err := json.Marshal(OrderPaid{AmountCents: cents})
		require.NoError(t, err)
		_, err = thin.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{Type: "OrderPaid", Data: data}})
		require.NoError(t, err)
	}
	room := math.MaxInt64 - stats.RevenueCents
	pay("order-console-big", room)
	pay("order-console-over", 1)
	require.NoError(t, b.Navigate(base+"/ui/projections"))
	js(30*time.Second, `document.querySelector('#parked-stats li[data-offset]') !== null`)
	require.Contains(t, js(5*time.Second, `document.querySelector('#parked-stats li .err').textContent`), "sum of cents out of the int64 range")
	require.Equal(t, "Retry Skip", js(5*time.Second, `[...document.querySelectorAll('#parked-stats li .buttons button')].filter(b => b.offsetParent !== null).map(b => b.textContent).join(' ')`), "both actions shown")
	shot("projections")
	pay("order-console-refund", -room)
	waitCaughtUp("stats")
	require.NoError(t, b.Click(`#parked-stats li .retry`))
	require.NoError(t, b.Click(`#confirm-ok`))
	js(20*time.Second, `document.getElementById('parked-stats').dataset.count === '0' && document.querySelector('#parked-stats li.none') !== null`)
	code, err = call("GET", base+"/views/stats", "", nil, &stats)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, int64(math.MaxInt64-room+1), stats.RevenueCents, "the retried event counted")

	// A rebuild's progress bar reaches 100 %.
	require.NoError(t, b.Click(`#projection-orders .rebuild-button`))
	require.NoError(t, b.Click(`#confirm-ok`))
	js(60*time.Second, `document.querySelector('#projection-orders progress').value === 100 && document.querySelector('#projection-orders .pct').textContent.startsWith('100 %')`)

	// Transfer leadership from the leader's own console: the session
	// signed in on node 1 is good on every node with the same token (the
	// cookie is the host's, whatever the port).
	leaderOf := func() string {
		var st struct {
			Shards []struct{ Leader string } `json:"shards"`
		}
		code, err := call("GET", base+"/status", "", nil, &st)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
		return st.Shards[0].Leader
	}
	var from string
	wait.Until(t, 20*time.Second, "a leader", func() bool { from = leaderOf(); return from != "" })
	leaderProc := procs[from[1]-'1']
	require.NoError(t, b.Navigate("http://"+leaderProc.http+"/ui/cluster"))
	js(10*time.Second, `document.querySelector('#shards tr[data-shard="0"] button.transfer:not([disabled])')`)
	require.NoError(t, b.Click(`#shards tr[data-shard="0"] button.transfer`))
	require.NoError(t, b.Click(`#confirm-ok`))
	require.Contains(t, js(20*time.Second, `document.getElementById('message').textContent`), "leadership handed from "+from)
	wait.Until(t, 20*time.Second, "another leader", func() bool { l := leaderOf(); return l != "" && l != from })

	// Every page fits a narrow window: only the tables' own scroll boxes
	// are wider than it.
	require.NoError(t, b.Viewport(390, 800))
	for _, page := range []string{"cluster", "streams?mode=category&q=order", "streams/order-console-1", "partitions", "groups", "groups/notifier", "projections"} {
		require.NoError(t, b.Navigate(base+"/ui/"+page))
		require.Equal(t, "fits", js(10*time.Second, `document.querySelector('#main tbody tr, .event, .projection') && innerWidth === 390 &&
			(document.documentElement.scrollWidth <= innerWidth ? 'fits' : 'overflows by ' + (document.documentElement.scrollWidth - innerWidth))`), page)
	}

	// The one failed request is the refused reset.
	for _, n := range b.Network() {
		require.Contains(t, n, "409 (Conflict)")
		require.Contains(t, n, "/admin/groups/notifier/reset")
	}
	require.Empty(t, b.Errors(), "errors the pages reported")
}
