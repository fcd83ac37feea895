package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
)

func TestCLIBackupAndRestore(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	for i := 0; i < 40; i++ {
		_, err := c.store.Append(ctx, fmt.Sprintf("order-%d", i%6), eventstore.Any, []eventstore.EventData{{Type: "Placed", Data: []byte(fmt.Sprint(i))}})
		require.NoError(t, err)
	}
	file := filepath.Join(t.TempDir(), "node.backup")
	out, errOut, code := c.run("backup", "--out", file)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "backup of node node1 of cluster "+c.store.Log().ClusterID()+" written to "+file)
	require.Regexp(t, `backup: .* of .* \(100%\)`, errOut)
	_, _, code = c.run("backup", "--out", file)
	require.Equal(t, exitUsage, code, "an existing file is not overwritten")
	_, _, code = c.run("backup")
	require.Equal(t, exitUsage, code)
	into := t.TempDir()
	out, errOut, code = c.run("backup", "--out", into)
	require.Equal(t, 0, code, errOut)
	written, err := filepath.Glob(filepath.Join(into, "esraft-*.backup"))
	require.NoError(t, err)
	require.Len(t, written, 1, "a directory gets a file named by the time")
	require.Contains(t, out, "written to "+written[0])

	dir := filepath.Join(t.TempDir(), "restored")
	var stdout, stderr bytes.Buffer
	require.NoError(t, run([]string{"restore", "--from", file, "--dir", dir, "--node", "node1"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "restored node node1 into "+dir+": cluster ")
	require.Contains(t, stderr.String(), "(100%)")
	s, err := eventstore.Open(ctx, dir, eventstore.Partitions(4))
	require.NoError(t, err)
	defer s.Close()
	require.NotEqual(t, c.store.Log().ClusterID(), s.Log().ClusterID())
	for i := 0; i < 6; i++ {
		stream := fmt.Sprintf("order-%d", i)
		want, err := c.store.ReadStream(ctx, stream, 0, 100)
		require.NoError(t, err)
		got, err := s.ReadStream(ctx, stream, 0, 100)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}

	// A backup cut short is refused, and leaves no directory.
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	short := filepath.Join(t.TempDir(), "short.backup")
	require.NoError(t, os.WriteFile(short, b[:len(b)-100], 0o600))
	bad := filepath.Join(t.TempDir(), "bad")
	err = run([]string{"restore", "--from", short, "--dir", bad, "--node", "node1"}, &stdout, &stderr)
	require.Equal(t, exitFailed, exitCode(err))
	require.ErrorContains(t, err, "corrupt")
	_, err = os.Stat(bad)
	require.True(t, os.IsNotExist(err))
	err = run([]string{"restore", "--from", file, "--dir", dir, "--node", "node1"}, &stdout, &stderr)
	require.Equal(t, exitUsage, exitCode(err), "a directory that is not empty")
}

// serveAdmin serves store's admin API with token "tok" and returns its URL.
func serveAdmin(t *testing.T, store *eventstore.Store) string {
	h, err := admin.New(admin.Config{Store: store, Token: "tok"})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// The operator's path with crypto-shredding: back up, shred a subject,
// restore, import the live keys: what was not shredded reads again, the
// shredded subject does not.
func TestCLIRestoreWithKeys(t *testing.T) {
	ctx := context.Background()
	enc := eventstore.Encrypt(eventstore.Encryption{Subject: eventstore.SubjectPerStream("user"), KEK: bytes.Repeat([]byte{3}, 32)})
	live, err := eventstore.Open(ctx, t.TempDir(), enc)
	require.NoError(t, err)
	defer live.Close()
	for _, stream := range []string{"user-1", "user-2"} {
		_, err := live.Append(ctx, stream, eventstore.NoStream, []eventstore.EventData{{Type: "Noted", Data: []byte("secret of " + stream)}})
		require.NoError(t, err)
	}
	liveAddr := serveAdmin(t, live)
	cli := func(addr string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(append(args, "--addr", addr, "--token", "tok"), &out, &errOut)
		return out.String(), err
	}
	tmp := t.TempDir()
	_, err = cli(liveAddr, "backup", "--out", filepath.Join(tmp, "b"))
	require.NoError(t, err)
	require.NoError(t, live.Shred(ctx, "user-1"))
	out, err := cli(liveAddr, "keys", "export", "--out", filepath.Join(tmp, "keys"))
	require.NoError(t, err)
	require.Contains(t, out, "1 key(s) written")

	dir := filepath.Join(tmp, "restored")
	require.NoError(t, run([]string{"restore", "--from", filepath.Join(tmp, "b"), "--dir", dir, "--node", "node1"}, io.Discard, io.Discard))
	restored, err := eventstore.Open(ctx, dir, enc)
	require.NoError(t, err)
	defer restored.Close()
	out, err = cli(serveAdmin(t, restored), "keys", "import", filepath.Join(tmp, "keys"))
	require.NoError(t, err)
	require.Contains(t, out, "1 key(s) imported")
	evs, err := restored.ReadStream(ctx, "user-2", 0, 10)
	require.NoError(t, err)
	require.Equal(t, "secret of user-2", string(evs[0].Data))
	evs, err = restored.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.ErrorIs(t, evs[0].Unreadable, eventstore.ErrShredded)
}
