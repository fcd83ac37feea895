// Package browser starts Debian's headless Chromium for the tests of the
// web console (package admin's /ui/), drives it through chromedp, and
// records every error a page reports: uncaught exceptions, console.error
// calls and the browser's own error log entries.
//
// Chromium must be installed (`apt-get install -y chromium`; .ci/run
// installs it when it is missing). A test that needs it fails, saying so,
// when it is absent; only under -short does it skip.
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Width and Height are the window the pages are drawn in, the size the
// console is designed for.
const (
	Width  = 1280
	Height = 800
)

// Browser is one headless Chromium with one tab.
type Browser struct {
	// Ctx runs chromedp actions in the tab.
	Ctx context.Context

	mu      sync.Mutex
	errs    []string // errors the pages reported
	network []string // failed requests the browser logged (an API's 409 is one)
}

// ExecPath is the Chromium binary: $ESRAFT_CHROMIUM, else chromium or
// chromium-browser on the PATH, else "".
func ExecPath() string {
	if p := os.Getenv("ESRAFT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start starts the browser for t, stopped when t ends. Without Chromium it
// fails t with how to install it (skips under -short).
func Start(t testing.TB) *Browser {
	t.Helper()
	path := ExecPath()
	if path == "" {
		msg := "chromium is not installed: install it with `apt-get install -y chromium` (Debian) or set ESRAFT_CHROMIUM to a Chromium binary"
		if testing.Short() {
			t.Skip(msg + " (skipped under -short)")
		}
		t.Fatal(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		// Chromium's sandbox cannot run as root in a container (CI).
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(Width, Height),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	b := &Browser{Ctx: ctx}
	msgs := chromedp.Console(ctx) // starts the browser
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.record(m)
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(Width, Height)); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	return b
}

func (b *Browser) record(m chromedp.ConsoleMessage) {
	if m.Type != chromedp.ConsoleError && !m.IsException() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	where := ""
	if m.URL != "" {
		where = fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
	}
	line := string(m.Type) + ": " + m.Text + where
	if m.Source == "network" {
		b.network = append(b.network, line)
		return
	}
	b.errs = append(b.errs, line)
}

// Errors are the errors the pages reported so far: uncaught exceptions,
// console.error calls and the browser's error log entries other than
// failed requests (see Network).
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// Network are the requests the browser logged as failed: an API's error
// answer (a 409 the page shows) is one.
func (b *Browser) Network() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.network...)
}

// Do runs actions in the tab, bounded by timeout.
func (b *Browser) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.Ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// WaitJS waits until the JavaScript expression is truthy in the page
// (re-evaluated on every animation frame) and returns its value as text.
// A navigation while it waits (a page that sends the browser on) starts
// the wait again in the new page.
func (b *Browser) WaitJS(timeout time.Duration, expr string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		ctx, cancel := context.WithTimeout(b.Ctx, left+time.Second)
		v, err := chromedp.Run(ctx, chromedp.Poll[any](expr, chromedp.WithPollingTimeout(left)))
		cancel()
		if err == nil {
			return fmt.Sprint(v), nil
		}
		if !navigated(err) || time.Now().After(deadline) {
			return "", fmt.Errorf("waiting for %s: %w", expr, err)
		}
		// The page was replaced under the poll: give the next one a
		// moment to exist.
		time.Sleep(20 * time.Millisecond)
	}
}

// navigated tells whether err is the DevTools protocol's answer to an
// evaluation in a page that has gone (its execution context destroyed).
func navigated(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Cannot find context with specified id") || strings.Contains(s, "Inspected target navigated or closed") ||
		strings.Contains(s, "Execution context was destroyed")
}

// Navigate opens url in the tab and waits for its load event.
func (b *Browser) Navigate(url string) error {
	return b.Do(30*time.Second, chromedp.Navigate(url))
}

// Click clicks the first element the CSS selector finds, once visible.
// An element replaced between finding and clicking it (a page that
// refreshes) is found again: the click had not been sent.
func (b *Browser) Click(css string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := b.Do(time.Until(deadline), chromedp.Click(chromedp.CSS(css)))
		if err == nil || !replaced(err) || time.Now().After(deadline) {
			return err
		}
	}
}

// replaced tells whether err says an element found went from the page
// before the action on it was sent.
func replaced(err error) bool {
	return strings.Contains(err.Error(), "Could not find node with given id") || strings.Contains(err.Error(), "Node is detached from document")
}

// ClickLoad clicks like Click and waits for the page it leads to to load
// (a link, a form's submit button).
func (b *Browser) ClickLoad(css string) error {
	ctx, cancel := context.WithTimeout(b.Ctx, 30*time.Second)
	defer cancel()
	_, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(css)))
	return err
}

// SignIn signs the browser in to the console at base (http://host:port)
// with the admin token, through the sign-in form, and waits for the
// cluster page it lands on.
func (b *Browser) SignIn(base, token string) error {
	if err := b.Navigate(base + "/ui/cluster"); err != nil {
		return err
	}
	if err := b.Do(10*time.Second, chromedp.SendKeys(chromedp.CSS("#token"), token)); err != nil {
		return err
	}
	if err := b.ClickLoad("#sign-in"); err != nil {
		return err
	}
	_, err := b.WaitJS(10*time.Second, `document.getElementById('main').dataset.page === 'cluster'`)
	return err
}

// Viewport resizes the page's viewport (a narrow window, a phone).
func (b *Browser) Viewport(width, height int64) error {
	return b.Do(10*time.Second, chromedp.EmulateViewport(width, height))
}

// Screenshot writes the viewport as a PNG to path.
func (b *Browser) Screenshot(path string) error {
	ctx, cancel := context.WithTimeout(b.Ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
