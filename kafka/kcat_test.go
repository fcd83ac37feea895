package kafka

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// kcat runs kcat against srv with args and stdin, within 30 s.
func kcat(t *testing.T, srv *Server, stdin string, args ...string) string {
	t.Helper()
	out, err := runKcat(needKcat(t), srv, stdin, args...)
	require.NoError(t, err)
	return out
}

// runKcat is kcat for goroutines other than the test's.
func runKcat(path string, srv *Server, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"-b", srv.Addr()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kcat %v: %w: %s", args, err, errb.String())
	}
	return out.String(), nil
}

func TestKcatProduceConsume(t *testing.T) {
	srv, _ := startServer(t)
	kcat(t, srv, "k1:v1\nk2:v2\nk3:v3\n", "-P", "-t", "orders", "-K", ":", "-H", "h1=x", "-H", "h2=y")
	out := kcat(t, srv, "", "-C", "-t", "orders", "-o", "beginning", "-e", "-f", "%k=%s@%o h=%h\n")
	require.Equal(t, "k1=v1@0 h=h1=x,h2=y\nk2=v2@1 h=h1=x,h2=y\nk3=v3@2 h=h1=x,h2=y\n", out)
	list := kcat(t, srv, "", "-L", "-t", "orders")
	require.Contains(t, list, `topic "orders" with 1 partitions`)
}

func TestKcatCompressionCodecs(t *testing.T) {
	srv, _ := startServer(t)
	var want strings.Builder
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		var in strings.Builder
		for i := 0; i < 50; i++ {
			line := codec + "-" + strings.Repeat("x", i)
			in.WriteString(line + "\n")
			want.WriteString(line + "\n")
		}
		kcat(t, srv, in.String(), "-P", "-t", "codecs", "-z", codec)
	}
	out := kcat(t, srv, "", "-C", "-t", "codecs", "-o", "beginning", "-e", "-f", "%s\n")
	require.Equal(t, want.String(), out)
	offsets := kcat(t, srv, "", "-C", "-t", "codecs", "-o", "beginning", "-e", "-f", "%o\n")
	lines := strings.Fields(offsets)
	require.Len(t, lines, 250)
	for i, l := range lines {
		require.Equal(t, strconv.Itoa(i), l, "offsets are dense from 0")
	}
}

func TestKcatOffsetEndAndTime(t *testing.T) {
	srv, _ := startServer(t)
	kcat(t, srv, "a\nb\n", "-P", "-t", "times")
	// The log's clock has millisecond resolution: wait until it has
	// passed the first records' time before taking the mark.
	first := time.Now().UnixMilli()
	require.Eventually(t, func() bool { return time.Now().UnixMilli() > first+1 }, time.Second, time.Millisecond)
	mark := time.Now().UnixMilli()
	kcat(t, srv, "c\nd\n", "-P", "-t", "times")
	out := kcat(t, srv, "", "-C", "-t", "times", "-o", "s@"+strconv.FormatInt(mark, 10), "-e", "-f", "%s@%o\n")
	require.Equal(t, "c@2\nd@3\n", out)
	// -o end: nothing of what is there, only what comes after.
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	path := needKcat(t)
	go func() {
		out, err := runKcat(path, srv, "", "-C", "-t", "times", "-o", "end", "-c", "1", "-f", "%s@%o\n")
		done <- result{out, err}
	}()
	// kcat -o end reads nothing until a record arrives after it started;
	// produce until it reports one (it may start after the first).
	deadline := time.After(20 * time.Second)
	var got result
wait:
	for {
		kcat(t, srv, "e\n", "-P", "-t", "times")
		select {
		case got = <-done:
			break wait
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("kcat -o end read nothing in 20 s")
		}
	}
	require.NoError(t, got.err)
	require.Regexp(t, `^e@[4-9]\n$`, got.out)
}
