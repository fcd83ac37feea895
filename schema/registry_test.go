package schema_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/schema"
)

const (
	placedV1 = `{"type":"object","properties":{"order_id":{"type":"string"},"qty":{"type":"integer","minimum":1}},"required":["order_id","qty"],"additionalProperties":false}`
	// placedV2 adds an optional property to a closed model: BACKWARD.
	placedV2 = `{"type":"object","properties":{"order_id":{"type":"string"},"qty":{"type":"integer","minimum":1},"note":{"type":"string"}},"required":["order_id","qty"],"additionalProperties":false}`
	// placedBad changes qty's type: breaks BACKWARD.
	placedBad = `{"type":"object","properties":{"order_id":{"type":"string"},"qty":{"type":"string"}},"required":["order_id","qty"],"additionalProperties":false}`
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openRegistry(t testing.TB, s *eventstore.Store) *schema.Registry {
	t.Helper()
	r, err := schema.Open(ctxT(t), s)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// placedStore is a single-node store with a registry holding placedV1.
func placedStore(t *testing.T) (context.Context, *eventstore.Store, *schema.Registry) {
	t.Helper()
	ctx := ctxT(t)
	s := eventstoretest.Single(t).Node(0)
	r := openRegistry(t, s)
	_, err := r.Register(ctx, "OrderPlaced", []byte(placedV1))
	require.NoError(t, err)
	return ctx, s, r
}

func event(typ, data string) []eventstore.EventData {
	return []eventstore.EventData{{Type: typ, Data: []byte(data)}}
}

func TestRegisterVersionsAndRefuseBreakingChange(t *testing.T) {
	ctx := ctxT(t)
	c := eventstoretest.Single(t)
	r := openRegistry(t, c.Node(0))

	v1, err := r.Register(ctx, "OrderPlaced", []byte(placedV1))
	require.NoError(t, err)
	require.Equal(t, 1, v1.Version)
	again, err := r.Register(ctx, "OrderPlaced", []byte(placedV1))
	require.NoError(t, err)
	require.Equal(t, v1, again, "the same schema again is the same version")

	_, err = r.Register(ctx, "OrderPlaced", []byte(placedBad))
	var ie *schema.IncompatibleError
	require.ErrorAs(t, err, &ie)
	require.ErrorIs(t, err, schema.ErrIncompatible)
	require.Equal(t, schema.Backward, ie.Mode)
	require.Len(t, ie.Incompatibilities, 1)
	require.Equal(t, "#/properties/qty/type", ie.Incompatibilities[0].Path)
	require.Contains(t, err.Error(), "#/properties/qty/type")

	v2, err := r.Register(ctx, "OrderPlaced", []byte(placedV2))
	require.NoError(t, err)
	require.Equal(t, 2, v2.Version)
	require.NotEqual(t, v1.ID, v2.ID)
	vs, err := r.Versions("OrderPlaced")
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, vs)
	byID, err := r.ByID(v1.ID)
	require.NoError(t, err)
	require.Equal(t, 1, byID.Version)

	// NONE lets the breaking change in.
	require.NoError(t, r.SetCompatibility(ctx, "OrderPlaced", schema.None))
	v3, err := r.Register(ctx, "OrderPlaced", []byte(placedBad))
	require.NoError(t, err)
	require.Equal(t, 3, v3.Version)

	_, err = r.Register(ctx, "OrderPlaced", []byte(`{"type":`))
	require.ErrorIs(t, err, schema.ErrInvalidSchema)
	_, err = r.Register(ctx, "", []byte(placedV1))
	require.ErrorIs(t, err, schema.ErrInvalidSubject)
	_, err = r.Get("Nope", schema.Latest)
	require.ErrorIs(t, err, schema.ErrSubjectNotFound)
	_, err = r.Get("OrderPlaced", 9)
	require.ErrorIs(t, err, schema.ErrVersionNotFound)
	require.ErrorIs(t, r.SetCompatibility(ctx, "OrderPlaced", "SIDEWAYS"), schema.ErrInvalidCompatibility)
}

func TestValidationModes(t *testing.T) {
	ctx, s, r := placedStore(t)

	// Default (registered): a registered type is checked, others pass.
	_, err := s.Append(ctx, "order-1", eventstore.Any, event("OrderPlaced", `{"order_id":"1","qty":0}`))
	var ie *schema.InvalidEventError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, "OrderPlaced", ie.Type)
	require.Equal(t, 1, ie.Version)
	require.Equal(t, "/qty", ie.Path)
	_, err = s.Append(ctx, "order-1", eventstore.Any, event("OrderNoted", `"anything"`))
	require.NoError(t, err)
	res, err := s.Append(ctx, "order-1", eventstore.Any, event("OrderPlaced", `{"order_id":"1","qty":2}`))
	require.NoError(t, err)
	evs, err := s.ReadStream(ctx, "order-1", res.LastVersion, 1)
	require.NoError(t, err)
	require.Equal(t, 1, evs[0].Metadata.SchemaVersion, "the event carries the version it was validated against")

	// Required: unregistered types are refused.
	require.NoError(t, r.SetValidationMode(ctx, "order", schema.ValidationRequired))
	_, err = s.Append(ctx, "order-2", eventstore.Any, event("OrderNoted", `{}`))
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 0, ie.Version)
	require.Contains(t, err.Error(), "not registered")
	// Other categories keep the default.
	_, err = s.Append(ctx, "cart-2", eventstore.Any, event("OrderNoted", `{}`))
	require.NoError(t, err)

	// A declared version that does not exist is refused; one that does is used.
	bad := event("OrderPlaced", `{"order_id":"1","qty":1}`)
	bad[0].Metadata.SchemaVersion = 7
	_, err = s.Append(ctx, "order-2", eventstore.Any, bad)
	require.ErrorAs(t, err, &ie)
	require.Contains(t, err.Error(), "version 7")

	// Advisory: invalid events are appended, counted and not stamped.
	require.NoError(t, r.SetValidationMode(ctx, "order", schema.ValidationAdvisory))
	before := r.Stats().AdvisoryFailures
	res, err = s.Append(ctx, "order-3", eventstore.Any, event("OrderPlaced", `{"qty":"x"}`))
	require.NoError(t, err)
	require.Equal(t, before+1, r.Stats().AdvisoryFailures)
	evs, err = s.ReadStream(ctx, "order-3", 1, 1)
	require.NoError(t, err)
	require.Equal(t, 0, evs[0].Metadata.SchemaVersion)

	// Off: nothing is checked.
	require.NoError(t, r.SetValidationMode(ctx, "order", schema.ValidationOff))
	_, err = s.Append(ctx, "order-4", eventstore.Any, event("OrderPlaced", `not json`))
	require.NoError(t, err)
	require.ErrorIs(t, r.SetValidationMode(ctx, "order", "strict"), schema.ErrInvalidValidationMode)
}

// TestInvalidEventFailsTheWholeAppend: one bad event among good ones, and
// not JSON at all: nothing of either append is written.
func TestInvalidEventFailsTheWholeAppend(t *testing.T) {
	ctx, s, r := placedStore(t)
	evs := append(event("OrderPlaced", `{"order_id":"1","qty":1}`), event("OrderPlaced", `{"order_id":"2","qty":1,"extra":true}`)...)
	_, err := s.Append(ctx, "order-1", eventstore.NoStream, evs)
	var ie *schema.InvalidEventError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, 1, ie.Index)
	_, err = s.Append(ctx, "order-1", eventstore.NoStream, event("OrderPlaced", `{"order_id":`))
	require.ErrorAs(t, err, &ie)
	require.Contains(t, ie.Reason, "not JSON")
	info, err := s.Stream(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, uint64(0), info.Version, "nothing of a refused append is written")
	require.Equal(t, uint64(2), r.Stats().Refused)
}

func TestRegistrySurvivesRestart(t *testing.T) {
	ctx := ctxT(t)
	c := eventstoretest.Single(t)
	r, err := schema.Open(ctx, c.Node(0))
	require.NoError(t, err)
	_, err = r.Register(ctx, "OrderPlaced", []byte(placedV1))
	require.NoError(t, err)
	_, err = r.Register(ctx, "OrderPlaced", []byte(placedV2))
	require.NoError(t, err)
	require.NoError(t, r.SetCompatibility(ctx, "OrderPlaced", schema.Full))
	require.NoError(t, r.Close())
	c.Stop(t, 0)
	c.Restart(t, 0)
	r2 := openRegistry(t, c.Node(0))
	vs, err := r2.Versions("OrderPlaced")
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, vs)
	mode, set := r2.Compatibility("OrderPlaced")
	require.True(t, set)
	require.Equal(t, schema.Full, mode)
	_, err = c.Node(0).Append(ctx, "order-1", eventstore.Any, event("OrderPlaced", `{"order_id":1,"qty":1}`))
	require.True(t, errors.Is(err, schema.ErrInvalidEvent), "validation is back after a restart: %v", err)
}
