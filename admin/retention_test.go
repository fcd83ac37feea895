package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
)

func TestRetentionAndScavengeEndpoints(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	for i := range 5 {
		for _, s := range []string{"order-1", "order-2", "cart-1"} {
			_, err := n.store.Append(ctx, s, eventstore.Any, []eventstore.EventData{{Type: "e", Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}})
			require.NoError(t, err)
		}
	}
	var got admin.Retention
	require.Equal(t, http.StatusOK, n.call(t, "PUT", "/admin/categories/order/retention", map[string]any{"max_count": 2}, &got))
	require.Equal(t, admin.Retention{Category: "order", RetentionRequest: admin.RetentionRequest{MaxCount: 2}}, got)
	require.Equal(t, http.StatusOK, n.call(t, "PUT", "/admin/streams/order-2/retention", map[string]any{"truncate_before": 5}, &got))
	require.Equal(t, "order-2", got.Stream)

	var page admin.EventPage
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/order-1/events", nil, &page))
	require.Len(t, page.Events, 2, "the category keeps the newest 2")
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/order-2/events", nil, &page))
	require.Len(t, page.Events, 1, "the stream's own setting overrides its category's")
	require.Equal(t, uint64(5), page.Events[0].Version)

	var e admin.Error
	require.Equal(t, http.StatusBadRequest, n.call(t, "PUT", "/admin/streams/order-2/retention", map[string]any{"max_age_ms": -1}, &e))
	require.Equal(t, "bad_request", e.Code)
	require.Equal(t, http.StatusBadRequest, n.call(t, "PUT", "/admin/streams/order-2/retention", map[string]any{"max_days": 1}, &e))

	var res admin.ScavengeResult
	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/scavenge", nil, &res))
	require.NotNil(t, res.Truncated, "a list, empty when nothing could be given back")
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/cart-1/events", nil, &page))
	require.Len(t, page.Events, 5, "a scavenge removes nothing readable")
}
