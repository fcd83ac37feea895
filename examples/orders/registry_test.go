package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/schema"
)

// TestSchemaRegistry: the service registers its order events' schemas at
// start, serves them through the Confluent-shaped API under /registry,
// keeps changes behind the admin token, and refuses an order event that
// does not match its schema.
func TestSchemaRegistry(t *testing.T) {
	addr, a, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data"), adminToken: "s3cret-token"})
	defer stop()
	base := "http://" + addr + "/registry"
	var subjects []string
	code, err := call("GET", base+"/subjects", "", nil, &subjects)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{"OrderCancelled", "OrderPaid", "OrderPlaced", "OrderShipped"}, subjects)

	var latest struct {
		Subject    string `json:"subject"`
		Version    int    `json:"version"`
		SchemaType string `json:"schemaType"`
		Schema     string `json:"schema"`
	}
	code, err = call("GET", base+"/subjects/OrderPaid/versions/latest", "", nil, &latest)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 1, latest.Version)
	require.Equal(t, "JSON", latest.SchemaType)
	require.Contains(t, latest.Schema, `"amount_cents"`)

	// amount_cents as a string breaks BACKWARD: the check says so, with the path.
	breaking := `{"type":"object","properties":{"amount_cents":{"type":"string"}},"required":["amount_cents"],"additionalProperties":false}`
	body, _ := json.Marshal(map[string]string{"schema": breaking, "schemaType": "JSON"})
	var compat struct {
		IsCompatible bool     `json:"is_compatible"`
		Messages     []string `json:"messages"`
	}
	code, err = call("POST", base+"/compatibility/subjects/OrderPaid/versions/latest?verbose=true", "", json.RawMessage(body), &compat)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.False(t, compat.IsCompatible)
	require.Contains(t, compat.Messages[0], "amount_cents")

	// Registering needs the admin token.
	code, _, _ = send(t, "POST", base+"/subjects/Note/versions", `{"schema":"{\"type\":\"string\"}"}`, nil)
	require.Equal(t, http.StatusUnauthorized, code)
	code, out, _ := send(t, "POST", base+"/subjects/Note/versions", `{"schema":"{\"type\":\"string\"}"}`,
		map[string]string{"Authorization": "Bearer s3cret-token"})
	require.Equal(t, http.StatusOK, code)
	require.Positive(t, out["id"])

	// An order event that breaks its schema is refused at append, and
	// the stream stays empty.
	_, err = a.store.Append(context.Background(), "order-bad", eventstore.NoStream, []eventstore.EventData{{
		Type: "OrderPaid", Data: []byte(`{"amount_cents":"ten"}`)}})
	var ie *schema.InvalidEventError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, "/amount_cents", ie.Path)
	info, err := a.store.Stream(context.Background(), "order-bad")
	require.NoError(t, err)
	require.Zero(t, info.Version)
}
