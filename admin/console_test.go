package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/systemtest/browser"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, c *http.Client, method, u string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// signIn posts the token to the sign-in form and returns the session
// cookie and the CSRF token of a console page.
func signIn(t *testing.T, base string) (cookie *http.Cookie, csrf string) {
	t.Helper()
	form := url.Values{"token": {token}, "next": {"/ui/streams"}}
	resp, _ := do(t, noRedirect, "POST", base+"/ui/login", strings.NewReader(form.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ui/streams", resp.Header.Get("Location"))
	for _, c := range resp.Cookies() {
		if c.Name == "esraft_console" {
			cookie = c
		}
	}
	require.NotNil(t, cookie, "the sign-in sets the session cookie")
	resp, page := do(t, noRedirect, "GET", base+"/ui/cluster", nil, map[string]string{"Cookie": cookie.String()})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	m := csrfMeta.FindStringSubmatch(page)
	require.NotNil(t, m, "the page carries its CSRF token")
	return cookie, m[1]
}

// The console's sign-in: pages send a browser without credentials to the
// sign-in form; a wrong token is refused; the right one sets an HttpOnly,
// SameSite=Strict cookie (Secure over TLS) that lets pages and the API's
// reads in, but a change needs the page's CSRF token too and may not come
// from another origin; a forged cookie is nothing; signing out ends it.
func TestConsoleSessionAndCSRF(t *testing.T) {
	n := newNode(t)
	base := n.srv.URL

	resp, _ := do(t, noRedirect, "GET", base+"/ui/groups", nil, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ui/login?next=%2Fui%2Fgroups", resp.Header.Get("Location"))
	resp, _ = do(t, noRedirect, "GET", base+"/ui/", nil, nil)
	require.Equal(t, "/ui/cluster", resp.Header.Get("Location"))

	form := func(tok, next string) io.Reader {
		return strings.NewReader(url.Values{"token": {tok}, "next": {next}}.Encode())
	}
	formType := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	resp, page := do(t, noRedirect, "POST", base+"/ui/login", form("wrong", ""), formType)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, page, "The admin token is wrong.")
	require.Empty(t, resp.Cookies())
	// Another site's page cannot sign the browser in.
	resp, _ = do(t, noRedirect, "POST", base+"/ui/login", form(token, ""), map[string]string{
		"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Empty(t, resp.Cookies())
	// A form too large to be a sign-in is refused as such.
	resp, page = do(t, noRedirect, "POST", base+"/ui/login", form(strings.Repeat("x", 8<<10), ""), formType)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, page, "The sign-in form could not be read (at most 4 KiB)")
	require.Empty(t, resp.Cookies())
	// Only a console path of this origin is a place to go after.
	resp, _ = do(t, noRedirect, "POST", base+"/ui/login", form(token, "//evil.example/ui/"), formType)
	require.Equal(t, "/ui/cluster", resp.Header.Get("Location"))

	cookie, csrf := signIn(t, base)
	require.True(t, cookie.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	require.False(t, cookie.Secure, "plain HTTP")
	require.NotContains(t, cookie.Value, token)

	withCookie := map[string]string{"Cookie": cookie.String()}
	resp, body := do(t, noRedirect, "GET", base+"/admin/projections", nil, withCookie)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)

	rebuild := base + "/admin/projections/seen/rebuild"
	resp, body = do(t, noRedirect, "POST", rebuild, nil, withCookie)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, body, `"code": "csrf"`)
	resp, body = do(t, noRedirect, "POST", rebuild, nil, map[string]string{"Cookie": cookie.String(), "X-CSRF-Token": csrf + "x"})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, body, `"code": "csrf"`)
	resp, body = do(t, noRedirect, "POST", rebuild, nil, map[string]string{"Cookie": cookie.String(), "X-CSRF-Token": csrf,
		"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, body, `"code": "cross_origin"`)
	require.Nil(t, n.proj.Status().Rebuild, "no refused request started a rebuild")
	resp, body = do(t, noRedirect, "POST", rebuild, nil, map[string]string{"Cookie": cookie.String(), "X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)

	forged := *cookie
	forged.Value = strings.TrimRight(cookie.Value, "A") + "A"
	if forged.Value == cookie.Value {
		forged.Value = cookie.Value[:len(cookie.Value)-1] + "B"
	}
	resp, _ = do(t, noRedirect, "GET", base+"/admin/status", nil, map[string]string{"Cookie": forged.String()})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	resp, _ = do(t, noRedirect, "POST", base+"/ui/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()),
		map[string]string{"Cookie": cookie.String(), "Content-Type": "application/x-www-form-urlencoded"})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	require.Equal(t, -1, resp.Cookies()[0].MaxAge, "signing out clears the cookie")

	// Pages are framed by no one and run only the console's own script.
	resp, _ = do(t, noRedirect, "GET", base+"/ui/cluster", nil, withCookie)
	require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	resp, _ = do(t, noRedirect, "GET", base+"/ui/nope", nil, withCookie)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// Over TLS the session cookie is Secure.
func TestConsoleCookieSecureOverTLS(t *testing.T) {
	store, err := eventstore.Open(context.Background(), t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	h, err := admin.New(admin.Config{Store: store, Token: token})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	c := srv.Client()
	c.CheckRedirect = noRedirect.CheckRedirect
	resp, _ := do(t, c, "POST", srv.URL+"/ui/login", strings.NewReader("token="+token), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	require.True(t, resp.Cookies()[0].Secure)
}

// The streams page of a node with 100,000 streams shows its first page
// reading one page of the listing, not all of it, and its next-page link
// goes on from the last row. It measures the time to the first page
// (median of 5 loads, by the browser from the start of the navigation to
// the table filled, after one load not counted; target 300 ms) and logs it.
//
// It runs without the race detector only (in .ci/run's -short pass):
// under -race the server is several times slower than the build users
// run, and seeding alone takes half a minute.
func TestConsoleStreamsPageWith100kStreams(t *testing.T) {
	if raceDetector {
		t.Skip("a timing bound: measured without -race (.ci/run's CGO_ENABLED=0 -short pass runs it)")
	}
	b := browser.Start(t)
	n := newNode(t)
	const streams, workers = 100_000, 64
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < streams; i += workers {
				_, err := n.store.Append(context.Background(), fmt.Sprintf("account-%06d", i), eventstore.Any,
					[]eventstore.EventData{{Type: "Opened", Data: []byte(`{"n":1}`)}})
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
	t.Logf("seeded %d streams in %v", streams, time.Since(start).Round(time.Millisecond))

	require.NoError(t, b.SignIn(n.srv.URL, token))

	// One load first, not counted: the browser's first sight of the
	// script and styles, the server's first use of the listing.
	require.NoError(t, b.Navigate(n.srv.URL+"/ui/streams"))
	_, err := b.WaitJS(10*time.Second, `document.getElementById('main').dataset.renderedMs`)
	require.NoError(t, err)
	var inPage, wall []float64
	for range 5 {
		t0 := time.Now()
		require.NoError(t, b.Navigate(n.srv.URL+"/ui/streams"))
		v, err := b.WaitJS(10*time.Second, `document.getElementById('main').dataset.renderedMs`)
		require.NoError(t, err)
		wall = append(wall, float64(time.Since(t0).Microseconds())/1000)
		var ms float64
		_, err = fmt.Sscan(v, &ms)
		require.NoError(t, err)
		inPage = append(inPage, ms)
	}
	slices.Sort(inPage)
	slices.Sort(wall)
	t.Logf("streams page, first page of 100,000 streams: navigation start to table filled %v ms (median %.0f); Go's wall time around it %v ms (median %.0f)",
		rounded(inPage), inPage[2], rounded(wall), wall[2])
	// The target is a median of at most 300 ms. It is reported
	// here and in BENCHMARKS.md, not asserted: the project checks speed by
	// measurement, never by a timed test that a busy CI machine can fail.
	if inPage[2] > 300 {
		t.Logf("the median is above the 300 ms target (a loaded machine, or a regression: compare with BENCHMARKS.md)")
	}

	rows, err := b.WaitJS(5*time.Second, `document.querySelectorAll('#streams tbody tr').length`)
	require.NoError(t, err)
	require.Equal(t, "50", rows)
	first, err := b.WaitJS(5*time.Second, `document.querySelector('#streams tbody tr a').textContent`)
	require.NoError(t, err)
	require.Equal(t, "account-000000", first)
	// One page of the listing crossed the network, not 100,000 streams.
	size, err := b.WaitJS(5*time.Second, `performance.getEntriesByType('resource').filter(e => e.name.includes('/admin/streams')).map(e => e.decodedBodySize).join(',')`)
	require.NoError(t, err)
	var body int
	_, err = fmt.Sscan(size, &body)
	require.NoError(t, err)
	require.Less(t, body, 16<<10, "one page of the listing, %s bytes", size)

	require.NoError(t, b.ClickLoad(`#next-page`))
	next, err := b.WaitJS(10*time.Second, `document.getElementById('main').dataset.renderedMs && location.search.includes('after=') && document.querySelector('#streams tbody tr a').textContent`)
	require.NoError(t, err)
	require.Equal(t, "account-000050", next)
	require.Empty(t, b.Errors(), "errors the pages reported")
}

// GET /admin/events/{id} finds an event by its ID, wherever its stream
// is; an unknown ID is a 404, a malformed one a 400, and a deleted
// stream's event is not found.
func TestAdminEventByID(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	_, err := n.store.Append(ctx, "cart-1", eventstore.Any, []eventstore.EventData{{Type: "Opened", Data: []byte(`{"n":1}`)}})
	require.NoError(t, err)
	n.appendEvents(t, "cart-2", 3)
	page := admin.EventPage{}
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/cart-1/events", nil, &page))
	require.Len(t, page.Events, 1)
	id := page.Events[0].ID

	var e admin.Event
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/events/"+id.String(), nil, &e))
	require.Equal(t, "cart-1", e.Stream)
	require.Equal(t, uint64(1), e.Version)
	require.Equal(t, "Opened", e.Type)
	var bad admin.Error
	require.Equal(t, http.StatusNotFound, n.call(t, "GET", "/admin/events/"+uuid.NewString(), nil, &bad))
	require.Contains(t, bad.Error, "no event")
	require.Equal(t, http.StatusBadRequest, n.call(t, "GET", "/admin/events/not-a-uuid", nil, &bad))
	require.Equal(t, "bad_request", bad.Code)

	_, err = n.store.DeleteStream(ctx, "cart-1", eventstore.Any)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, n.call(t, "GET", "/admin/events/"+id.String(), nil, &bad))
}
