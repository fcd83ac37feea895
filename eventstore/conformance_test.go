package eventstore_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore/eventstoretest"
)

func TestConformanceSingleNode(t *testing.T) {
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Cluster { return eventstoretest.Single(t) })
}

func TestConformanceThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster per test")
	}
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Cluster { return eventstoretest.StartCluster(t, 3) })
}

func TestConformanceThreeNodesTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster per test")
	}
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Cluster {
		c := eventstoretest.StartTLSCluster(t, 3)
		require.NoError(t, c.Node(0).Log().ReloadTLS(), "TLS is on")
		return c
	})
}
