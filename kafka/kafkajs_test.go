package kafka

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkajs runs kafkajs 2.2.4 (Node.js) against the listener:
// testdata/kafkajs/check.js produces with keys and headers, runs a
// two-member group from the beginning, seeks, long-polls an empty topic and
// reads what kcat and franz-go produced. It needs node and `npm ci` in
// testdata/kafkajs (.ci/run does it).
func TestKafkajs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Node.js")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missingClient(t, "node is not installed: apt-get install -y nodejs npm")
	}
	dir := filepath.Join("testdata", "kafkajs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "kafkajs")); err != nil {
		missingClient(t, "kafkajs is not installed: (cd kafka/testdata/kafkajs && npm ci)")
	}
	srv, _ := startServer(t)
	var in strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&in, "k%d:v%d\n", i, i)
	}
	kcat(t, srv, in.String(), "-P", "-t", "from-kcat", "-K", ":", "-H", "h=x")
	cl := newClient(t, srv)
	createTopic(t, cl, "from-franz", 1)
	for i := 0; i < 5; i++ {
		r := &kgo.Record{Topic: "from-franz", Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("y")}}}
		require.NoError(t, cl.ProduceSync(context.Background(), r).FirstErr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "check.js", srv.Addr(), "from-kcat:5:x", "from-franz:5:y")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err)
}
