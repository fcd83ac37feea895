package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esraft/esraft/systemtest/syncbuf"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/clitest"
	"github.com/esraft/esraft/systemtest/wait"
)

// cli runs the tool in-process against a single-node store's admin API.
type cli struct {
	t     *testing.T
	addr  string
	store *eventstore.Store
	proj  *projection.Local
	// hold, if set, makes the projection's handler wait until it is
	// closed (a rebuild held at its first event).
	hold atomic.Pointer[chan struct{}]
}

func newCLI(t *testing.T) *cli {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := eventstore.Open(ctx, t.TempDir(), eventstore.Partitions(4))
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	db, err := sqlite.Open(ctx, t.TempDir(), `CREATE TABLE n (id TEXT PRIMARY KEY)`)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	c := &cli{t: t, store: store}
	p := projection.NewLocal(store, db, "count", func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if h := c.hold.Load(); h != nil {
			select {
			case <-*h:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		_, err := projection.Exec(ctx, tx, `INSERT INTO n (id) VALUES (?)`, ev.ID.String())
		return err
	}, projection.Options{BatchSize: 50})
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h, err := admin.New(admin.Config{Store: store, Projections: map[string]*projection.Local{"count": p}, Token: "tok", Context: ctx})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c.addr, c.proj = srv.URL, p
	return c
}

// run runs the tool with the connection flags; it returns stdout, stderr
// and the exit code main would give.
func (c *cli) run(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	args = append(args, "--addr", c.addr, "--token", "tok")
	err := run(args, &out, &errOut)
	return out.String(), errOut.String(), exitCode(err)
}

func exitCode(err error) int {
	var e *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e.code
	}
	return exitUsage
}

func TestCLIVerbs(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	for i := range 250 {
		_, err := c.store.Append(ctx, fmt.Sprintf("order-%d", i), eventstore.Any, []eventstore.EventData{{Type: "Placed", Data: []byte(`{}`)}})
		require.NoError(t, err)
	}

	out, _, code := c.run("status")
	require.Equal(t, 0, code)
	require.Contains(t, out, "voter")
	require.Regexp(t, `(?m)^SHARD\s+LEADER`, out)

	// streams ls pages through every stream with --all.
	out, errOut, code := c.run("streams", "ls", "--prefix", "order-", "--limit", "100", "--all")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 251) // header + 250
	require.Contains(t, errOut, "250 stream(s)")
	require.True(t, strings.HasPrefix(lines[1], "order-0 "))
	require.True(t, strings.HasPrefix(lines[250], "order-249 "))
	// One page, and where the next starts.
	out, errOut, code = c.run("streams", "ls", "--category", "order", "--limit", "10")
	require.Equal(t, 0, code)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 11)
	require.Contains(t, errOut, `more: --after "order-9"`)

	out, _, code = c.run("streams", "show", "order-7", "--json")
	require.Equal(t, 0, code)
	var info admin.StreamInfo
	require.NoError(t, json.Unmarshal([]byte(out), &info))
	require.Equal(t, uint64(1), info.Version)

	out, _, code = c.run("streams", "read", "order-7")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Placed")

	out, _, code = c.run("partitions", "ls", "-o", "json")
	require.Equal(t, 0, code)
	var parts admin.PartitionList
	require.NoError(t, json.Unmarshal([]byte(out), &parts))
	require.Len(t, parts.Partitions, 4)

	out, errOut, code = c.run("partitions", "tail", "0", "--from", "0", "--count", "3")
	require.Equal(t, 0, code, errOut)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 3)

	// order-7 holds one event: from version 1, the tail prints it first.
	out, errOut, code = c.run("streams", "tail", "order-7", "--from", "1", "--count", "1")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^1\tPlaced\t\d+/\d+\t`, out)

	_, err := c.store.JoinGroup(ctx, "billing", "m1", 10*time.Second)
	require.NoError(t, err)
	out, _, code = c.run("groups", "ls")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^billing\s+\d+\s+1\s+250\s+0`, out)
	out, _, code = c.run("groups", "describe", "billing")
	require.Equal(t, 0, code)
	require.Contains(t, out, "m1")
	// A reset while m1 is live is refused and says how to force it;
	// forced, it fences m1 out of the group.
	_, err = c.runErr("groups", "reset", "billing", "--to-earliest", "--yes")
	require.Equal(t, exitFailed, exitCode(err), err)
	require.ErrorContains(t, err, "--force")
	out, errOut, code = c.run("groups", "reset", "billing", "--to-earliest", "--force", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "group billing reset to earliest")
	st, ok, err := c.store.GroupState("billing")
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, st.Members)

	out, _, code = c.run("parked", "ls", "--projection", "count")
	require.Equal(t, 0, code)
	require.Contains(t, out, "PARTITION")

	out, errOut, code = c.run("scavenge")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `segment\(s\) removed, \d+ bytes freed on this node`, out)

	// A rebuild followed to its end: progress reported from its start,
	// ending on the server's own final figure.
	wait.Until(t, 20*time.Second, "the projection caught up", func() bool { return c.proj.Status().Lag == 0 })
	total := 0
	for part := range c.store.Partitions() {
		h, err := c.store.Head(eventstore.Partition(part))
		require.NoError(t, err)
		total += int(h)
	}
	// The rebuild is held at its first event until the CLI has printed a
	// line of it in progress (250 events replay in about 30 ms, less than
	// the CLI's first poll), then let go.
	hold := make(chan struct{})
	c.hold.Store(&hold)
	var followed, followErr syncbuf.Buffer
	ended := make(chan error, 1)
	go func() {
		ended <- run([]string{"projections", "rebuild", "count", "--follow", "--interval", "20ms", "--addr", c.addr, "--token", "tok"}, &followed, &followErr)
	}()
	wait.Until(t, 20*time.Second, "a rebuild progress line below 100%", func() bool {
		return strings.Contains(followed.String(), "% (0/")
	})
	close(hold)
	c.hold.Store(nil)
	select {
	case err := <-ended:
		require.NoError(t, err, followErr.String())
	case <-time.After(time.Minute):
		t.Fatal("rebuild --follow did not end")
	}
	rebuildLines := strings.Split(strings.TrimSpace(followed.String()), "\n")
	clitest.CheckRebuildProgress(t, rebuildLines, total)
}

func TestCLIErrors(t *testing.T) {
	c := newCLI(t)
	var out, errOut bytes.Buffer
	err := run([]string{"status", "--addr", c.addr}, &out, &errOut)
	require.Equal(t, exitAuth, exitCode(err))
	require.Contains(t, err.Error(), "admin token")

	_, _, code := c.run("streams", "show", "nope")
	require.Equal(t, exitNotFound, code)
	_, _, code = c.run("groups", "describe", "nope")
	require.Equal(t, exitNotFound, code)
	_, _, code = c.run("streams", "ls", "--prefix", "a", "--category", "b")
	require.Equal(t, exitUsage, code)
	_, _, code = c.run("parked", "ls")
	require.Equal(t, exitUsage, code)
	_, _, code = c.run("cluster", "transfer")
	require.Equal(t, exitUsage, code)
	_, _, code = c.run("cluster", "frobnicate")
	require.Equal(t, exitUsage, code)
	_, _, code = c.run("streams", "show")
	require.Equal(t, exitUsage, code)

	err = run([]string{"status", "--addr", "127.0.0.1:1", "--timeout", "2s"}, &out, &errOut)
	require.Equal(t, exitUnreachable, exitCode(err))
	require.Contains(t, err.Error(), "cannot reach")
}

// TestCLIParkedGroupEvent: a consumer group parks a poison event;
// parked ls shows it, and parked retry clears it once the handler is
// mended.
func TestCLIParkedGroupEvent(t *testing.T) {
	c := newCLI(t)
	var broken atomic.Bool
	broken.Store(true)
	var handled atomic.Int64
	g := projection.NewGroup(c.store, "mailer", "m1", func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "poison-1" && broken.Load() {
			return errors.New("template missing")
		}
		handled.Add(1)
		return nil
	}, projection.GroupOptions{Options: projection.Options{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, s := range []string{"poison-1", "fine-1", "fine-2"} {
		_, err := c.store.Append(context.Background(), s, eventstore.Any, []eventstore.EventData{{Type: "Mail", Data: []byte(`{}`)}})
		require.NoError(t, err)
	}
	var out string
	wait.Until(t, 30*time.Second, "the poison event parked", func() bool {
		out, _, _ = c.run("parked", "ls", "--group", "mailer")
		return strings.Contains(out, "template missing")
	})
	require.Regexp(t, `(?m)^\d+\s+\d+\s+poison-1\s+2\s+template missing`, out)
	fields := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1])
	broken.Store(false)
	out, errOut, code := c.run("parked", "retry", fields[0], fields[1], "--group", "mailer")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "retry asked of its owner")
	wait.Until(t, 30*time.Second, "the parked event handled", func() bool {
		out, _, _ = c.run("parked", "ls", "--group", "mailer", "--json")
		var l admin.ParkedList
		return json.Unmarshal([]byte(out), &l) == nil && len(l.Parked) == 0 && handled.Load() == 3
	})
	// A retry of what is not parked is a clear not-found.
	err := run([]string{"parked", "retry", fields[0], fields[1], "--group", "mailer", "--addr", c.addr, "--token", "tok"}, io.Discard, io.Discard)
	require.Equal(t, exitNotFound, exitCode(err))
	require.ErrorContains(t, err, `consumer group "mailer" has no parked event at partition`)
}

// runErr runs the tool with the connection flags and returns stdout and
// the error main would print.
func (c *cli) runErr(args ...string) (string, error) {
	var out bytes.Buffer
	err := run(append(args, "--addr", c.addr, "--token", "tok"), &out, io.Discard)
	return out.String(), err
}

// withTerminal makes the verbs ask for confirmation on in (nil: no
// terminal) for the rest of the test.
func withTerminal(t *testing.T, in io.Reader) {
	old := terminal
	terminal = func() io.Reader { return in }
	t.Cleanup(func() { terminal = old })
}

// TestCLIGroupResetAndDelete: a consumer group handles N events and is
// stopped; groups reset --to-earliest makes it handle each of them once
// more when started again. A reset while a member is live is refused
// with the members named; without --yes the verbs ask, and refuse with no
// terminal; delete removes the group.
func TestCLIGroupResetAndDelete(t *testing.T) {
	c := newCLI(t)
	const n = 40
	for i := range n {
		_, err := c.store.Append(context.Background(), fmt.Sprintf("invoice-%d", i%10), eventstore.Any, []eventstore.EventData{{Type: "Billed", Data: []byte(`{}`)}})
		require.NoError(t, err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	total := func() (events, handled int) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range seen {
			handled += k
		}
		return len(seen), handled
	}
	start := func() (stop func()) {
		g := projection.NewGroup(c.store, "billing", "m1", func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
			mu.Lock()
			seen[ev.ID.String()]++
			mu.Unlock()
			return nil
		}, projection.GroupOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	lagZero := func() bool {
		out, _, code := c.run("groups", "describe", "billing", "--json")
		var g admin.Group
		return code == 0 && json.Unmarshal([]byte(out), &g) == nil && g.Lag == 0 && len(g.Partitions) > 0
	}

	stop := start()
	wait.Until(t, 30*time.Second, "every event handled once", func() bool {
		events, handled := total()
		return events == n && handled == n && lagZero()
	})

	// Refused while m1 is live: nothing changes.
	_, err := c.runErr("groups", "reset", "billing", "--to-earliest", "--yes")
	require.Equal(t, exitFailed, exitCode(err))
	require.ErrorContains(t, err, `consumer group "billing" has live members (m1): stop them`)
	require.ErrorContains(t, err, "HTTP 409")
	_, err = c.runErr("groups", "delete", "billing", "--yes")
	require.Equal(t, exitFailed, exitCode(err))
	require.ErrorContains(t, err, "live members (m1)")
	require.True(t, lagZero())

	stop()
	// No terminal and no --yes: refused before anything is sent.
	withTerminal(t, nil)
	_, err = c.runErr("groups", "reset", "billing", "--to-earliest")
	require.Equal(t, exitUsage, exitCode(err))
	require.ErrorContains(t, err, "give --yes")
	// Asked, and not confirmed.
	withTerminal(t, strings.NewReader("n\n"))
	_, err = c.runErr("groups", "reset", "billing", "--to-earliest")
	require.Equal(t, exitFailed, exitCode(err))
	require.ErrorContains(t, err, "not confirmed; nothing was changed")
	require.True(t, lagZero())
	// Bad usage.
	for _, args := range [][]string{
		{"groups", "reset", "billing", "--yes"},
		{"groups", "reset", "billing", "--to-earliest", "--to-latest", "--yes"},
		{"groups", "reset", "billing", "--to-time", "yesterday", "--yes"},
		{"groups", "reset", "billing", "--to-offsets", "1,x", "--yes"},
	} {
		_, err = c.runErr(args...)
		require.Equal(t, exitUsage, exitCode(err), args)
	}
	// The server checks the offsets against the log: 4 partitions.
	_, err = c.runErr("groups", "reset", "billing", "--to-offsets", "0,0", "--yes")
	require.Equal(t, exitFailed, exitCode(err))
	require.ErrorContains(t, err, "give one per partition")

	out, err := c.runErr("groups", "reset", "billing", "--to-earliest", "--yes")
	require.NoError(t, err)
	require.Contains(t, out, "group billing reset to earliest: generation")
	require.Contains(t, out, fmt.Sprintf("lag %d,", n))
	require.Regexp(t, `(?m)^PARTITION\s+OWNER`, out)

	stop = start()
	wait.Until(t, 30*time.Second, "every event handled twice", func() bool {
		_, handled := total()
		return handled == 2*n && lagZero()
	})
	stop()
	mu.Lock()
	for id, k := range seen {
		require.Equal(t, 2, k, "event %s", id)
	}
	require.Len(t, seen, n)
	mu.Unlock()

	// --json gives the API's answer; a confirmed delete removes the group.
	out, err = c.runErr("groups", "reset", "billing", "--to-latest", "--yes", "--json")
	require.NoError(t, err)
	var g admin.Group
	require.NoError(t, json.Unmarshal([]byte(out), &g))
	require.Zero(t, g.Lag)
	withTerminal(t, strings.NewReader("y\n"))
	out, err = c.runErr("groups", "delete", "billing")
	require.NoError(t, err)
	require.Equal(t, "group billing deleted\n", out)
	_, err = c.runErr("groups", "describe", "billing")
	require.Equal(t, exitNotFound, exitCode(err))
	require.ErrorContains(t, err, `consumer group "billing" does not exist`)
	_, err = c.runErr("groups", "delete", "billing", "--yes")
	require.Equal(t, exitNotFound, exitCode(err))
	_, err = c.runErr("groups", "reset", "billing", "--to-earliest", "--yes")
	require.Equal(t, exitNotFound, exitCode(err))
}

// TestStdinTerminal: /dev/null and a pipe, as scripts give, are not
// terminals to confirm on (/dev/null is a character device: a file-mode
// check would take it for one).
func TestStdinTerminal(t *testing.T) {
	old := os.Stdin
	t.Cleanup(func() { os.Stdin = old })
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	for _, f := range []*os.File{null, r} {
		os.Stdin = f
		require.Nil(t, stdinTerminal(), f.Name())
	}
}

// TestCLIParkedSkip: parked skip asks for confirmation (and refuses with
// no terminal, sending nothing), then drops a consumer group's parked
// event unhandled: the owner unparks it, describe counts it as skipped,
// the handler never saw it. A local projection's parked event is skipped
// at once; a skip of what is not parked is a not-found.
func TestCLIParkedSkip(t *testing.T) {
	c := newCLI(t)
	var handled atomic.Int64
	g := projection.NewGroup(c.store, "mailer", "m1", func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "poison-1" {
			return errors.New("no such recipient")
		}
		handled.Add(1)
		return nil
	}, projection.GroupOptions{Options: projection.Options{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		SessionTimeout: 1500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, s := range []string{"poison-1", "fine-1"} {
		_, err := c.store.Append(context.Background(), s, eventstore.Any, []eventstore.EventData{{Type: "Mail", Data: []byte(`{}`)}})
		require.NoError(t, err)
	}
	var l admin.ParkedList
	wait.Until(t, 30*time.Second, "the poison event parked", func() bool {
		out, _, _ := c.run("parked", "ls", "--group", "mailer", "-o", "json")
		return json.Unmarshal([]byte(out), &l) == nil && len(l.Parked) == 1
	})
	part, off := fmt.Sprint(l.Parked[0].Partition), fmt.Sprint(l.Parked[0].Offset)

	withTerminal(t, nil)
	_, err := c.runErr("parked", "skip", part, off, "--group", "mailer")
	require.Equal(t, exitUsage, exitCode(err))
	require.ErrorContains(t, err, "give --yes")
	var question bytes.Buffer
	withTerminal(t, strings.NewReader("n\n"))
	err = run([]string{"parked", "skip", part, off, "--group", "mailer", "--addr", c.addr, "--token", "tok"}, io.Discard, &question)
	require.Equal(t, exitFailed, exitCode(err))
	require.Contains(t, question.String(), `Consumer group "mailer" will never handle it.`)
	out, _, _ := c.run("parked", "ls", "--group", "mailer")
	require.NotContains(t, out, "(skip asked)", "nothing was sent")

	withTerminal(t, strings.NewReader("y\n"))
	out, errOut, code := c.run("parked", "skip", part, off, "--group", "mailer")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, fmt.Sprintf("partition %s offset %s: skip asked of its owner\n", part, off), out)
	wait.Until(t, 30*time.Second, "the owner skipped it", func() bool {
		out, _, _ := c.run("groups", "describe", "mailer", "-o", "json")
		var gr admin.Group
		return json.Unmarshal([]byte(out), &gr) == nil && gr.Parked == 0 && gr.Skipped == 1
	})
	require.Equal(t, int64(1), handled.Load(), "fine-1 only")
	out, _, _ = c.run("groups", "describe", "mailer")
	require.Contains(t, out, "parked 0, skipped 1")
	_, err = c.runErr("parked", "skip", part, off, "--group", "mailer", "--yes")
	require.Equal(t, exitNotFound, exitCode(err))
	require.ErrorContains(t, err, `consumer group "mailer" has no parked event at partition`)

	// The local projection "count" of newCLI parks nothing; a skip there
	// is a not-found too, from the projection.
	_, err = c.runErr("parked", "skip", "0", "0", "--projection", "count", "--yes")
	require.Equal(t, exitNotFound, exitCode(err))
	require.ErrorContains(t, err, "event not parked")
}
