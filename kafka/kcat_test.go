package kafka

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// kcat runs kcat against srv with args and stdin, within 30 s.
func kcat(t *testing.T, srv *Server, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, needKcat(t), append([]string{"-b", srv.Addr()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	require.NoError(t, err, "kcat %v: %s", args, errb.String())
	return out.String()
}

func TestKcatProduceConsume(t *testing.T) {
	srv, _ := startServer(t)
	kcat(t, srv, "k1:v1\nk2:v2\nk3:v3\n", "-P", "-t", "orders", "-K", ":", "-H", "h1=x", "-H", "h2=y")
	out := kcat(t, srv, "", "-C", "-t", "orders", "-o", "beginning", "-e", "-f", "%k=%s@%o h=%h\n")
	require.Equal(t, "k1=v1@0 h=h1=x,h2=y\nk2=v2@1 h=h1=x,h2=y\nk3=v3@2 h=h1=x,h2=y\n", out)
	list := kcat(t, srv, "", "-L", "-t", "orders")
	require.Contains(t, list, `topic "orders" with 1 partitions`)
}
