package schema_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/schema"
)

// call sends a request with a JSON body (nil: none) and decodes the JSON
// answer into out.
func call(t *testing.T, srv *httptest.Server, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", schema.ContentType)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, schema.ContentType, resp.Header.Get("Content-Type"))
	if out != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

type apiErr struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

// TestRESTConfluentShapes drives the API the way a Confluent client does:
// register, get the latest version, check compatibility, configure.
func TestRESTConfluentShapes(t *testing.T) {
	c := eventstoretest.Single(t)
	r := openRegistry(t, c.Node(0))
	srv := httptest.NewServer(schema.Handler(r))
	t.Cleanup(srv.Close)

	var reg struct {
		ID int `json:"id"`
	}
	require.Equal(t, 200, call(t, srv, "POST", "/subjects/OrderPlaced/versions", map[string]string{"schema": placedV1, "schemaType": "JSON"}, &reg))
	require.Positive(t, reg.ID)

	var latest struct {
		Subject    string `json:"subject"`
		ID         int    `json:"id"`
		Version    int    `json:"version"`
		SchemaType string `json:"schemaType"`
		Schema     string `json:"schema"`
	}
	require.Equal(t, 200, call(t, srv, "GET", "/subjects/OrderPlaced/versions/latest", nil, &latest))
	require.Equal(t, "OrderPlaced", latest.Subject)
	require.Equal(t, reg.ID, latest.ID)
	require.Equal(t, 1, latest.Version)
	require.Equal(t, "JSON", latest.SchemaType)
	require.JSONEq(t, placedV1, latest.Schema)

	var compat struct {
		IsCompatible bool     `json:"is_compatible"`
		Messages     []string `json:"messages"`
	}
	require.Equal(t, 200, call(t, srv, "POST", "/compatibility/subjects/OrderPlaced/versions/latest", map[string]string{"schema": placedV2}, &compat))
	require.True(t, compat.IsCompatible)
	require.Equal(t, 200, call(t, srv, "POST", "/compatibility/subjects/OrderPlaced/versions/1?verbose=true", map[string]string{"schema": placedBad}, &compat))
	require.False(t, compat.IsCompatible)
	require.Len(t, compat.Messages, 1)
	require.Contains(t, compat.Messages[0], "#/properties/qty/type")

	var e apiErr
	require.Equal(t, 409, call(t, srv, "POST", "/subjects/OrderPlaced/versions", map[string]string{"schema": placedBad}, &e))
	require.Equal(t, 409, e.Code)
	require.Contains(t, e.Message, "#/properties/qty/type")

	require.Equal(t, 200, call(t, srv, "POST", "/subjects/OrderPlaced/versions", map[string]string{"schema": placedV2}, &reg))
	var found struct {
		ID      int `json:"id"`
		Version int `json:"version"`
	}
	require.Equal(t, 200, call(t, srv, "POST", "/subjects/OrderPlaced", map[string]string{"schema": placedV2}, &found), "a serializer that does not register looks its schema up")
	require.Equal(t, reg.ID, found.ID)
	require.Equal(t, 2, found.Version)

	var versions []int
	require.Equal(t, 200, call(t, srv, "GET", "/subjects/OrderPlaced/versions", nil, &versions))
	require.Equal(t, []int{1, 2}, versions)
	var subjects []string
	require.Equal(t, 200, call(t, srv, "GET", "/subjects", nil, &subjects))
	require.Equal(t, []string{"OrderPlaced"}, subjects)
	var byID map[string]string
	require.Equal(t, 200, call(t, srv, "GET", "/schemas/ids/"+itoa(reg.ID), nil, &byID))
	require.JSONEq(t, placedV2, byID["schema"])

	var cfg map[string]string
	require.Equal(t, 200, call(t, srv, "GET", "/config/OrderPlaced", nil, &cfg))
	require.Equal(t, "BACKWARD", cfg["compatibilityLevel"])
	require.Equal(t, 200, call(t, srv, "PUT", "/config/OrderPlaced", map[string]string{"compatibility": "NONE"}, &cfg))
	require.Equal(t, "NONE", cfg["compatibility"])
	require.Equal(t, 200, call(t, srv, "GET", "/config/OrderPlaced", nil, &cfg))
	require.Equal(t, "NONE", cfg["compatibilityLevel"])
	require.Equal(t, 200, call(t, srv, "PUT", "/config", map[string]string{"compatibility": "FULL"}, &cfg))
	require.Equal(t, 200, call(t, srv, "GET", "/config", nil, &cfg))
	require.Equal(t, "FULL", cfg["compatibilityLevel"])
	require.Equal(t, 200, call(t, srv, "POST", "/subjects/OrderPlaced/versions", map[string]string{"schema": placedBad}, &reg), "NONE lets it in")

	// Errors, with Confluent's codes.
	for _, tc := range []struct {
		method, path string
		body         any
		status, code int
	}{
		{"GET", "/subjects/Nope/versions", nil, 404, 40401},
		{"GET", "/subjects/OrderPlaced/versions/9", nil, 404, 40402},
		{"GET", "/subjects/OrderPlaced/versions/first", nil, 422, 42202},
		{"GET", "/schemas/ids/999999", nil, 404, 40403},
		{"POST", "/subjects/OrderPlaced", map[string]string{"schema": `{"type":"null"}`}, 404, 40403},
		{"POST", "/subjects/X/versions", map[string]string{"schema": `{"type":`}, 422, 42201},
		{"POST", "/subjects/X/versions", map[string]string{"schema": `{}`, "schemaType": "AVRO"}, 422, 42201},
		{"POST", "/subjects/X/versions", "not an object", 400, 400},
		{"PUT", "/config/X", map[string]string{"compatibility": "SIDEWAYS"}, 422, 42203},
		{"POST", "/subjects/X/versions", map[string]string{"schema": strings.Repeat(" ", 2*schema.MaxSchemaBytes+5000)}, 413, 41301},
	} {
		e = apiErr{}
		require.Equal(t, tc.status, call(t, srv, tc.method, tc.path, tc.body, &e), "%s %s", tc.method, tc.path)
		require.Equal(t, tc.code, e.Code, "%s %s: %s", tc.method, tc.path, e.Message)
		require.NotEmpty(t, e.Message)
	}
	require.Equal(t, []string{"OrderPlaced"}, r.Subjects(), "refused registrations leave nothing behind")
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
