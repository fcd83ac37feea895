package main

import (
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
)

// Drills rehearse operating the service on a running cluster without
// breaking anything real. They are operator endpoints, behind the admin
// token like the admin API.
//
// A notifier drill event (type NotifierDrill, in stream drill-<uuid>) is a
// deliberately failing event: the notifier's handler fails on it while
// the notifier outage switch of the node handling it is on, as it would
// while a dependency it needs is down, and notifies it once the switch is
// off. With the switch on (on every node: any node may own the event's
// partition) a drill event is parked after the notifier's attempts, and
// `esraft parked ls|retry|skip --group notifier` operate on it:
//
//	PUT  /drills/notifier/outage  {"on": true}  this node's switch; {"on": false} mends it
//	POST /drills/notifier                       appends a drill event: {"stream", "partition", "offset"}
const drillEventType = "NotifierDrill"

// errDrillOutage is the notifier's error on a drill event while the
// outage switch is on.
var errDrillOutage = errors.New("notifier drill: the notifier outage switch of this node is on (PUT /drills/notifier/outage {\"on\": false} mends it)")

// drillAppended is the answer of POST /drills/notifier.
type drillAppended struct {
	Stream    string `json:"stream"`
	Partition int    `json:"partition"`
	Offset    uint64 `json:"offset"`
}

// drillOutage is the body and answer of PUT /drills/notifier/outage.
type drillOutage struct {
	On *bool `json:"on"`
}

func (a *app) appendDrill(w http.ResponseWriter, r *http.Request) {
	if err := decodeJSON(r, &struct{}{}); err != nil {
		writeError(w, err)
		return
	}
	res, err := a.store.Append(r.Context(), "drill-"+uuid.NewString(), eventstore.NoStream,
		[]eventstore.EventData{{Type: drillEventType, Data: []byte(`{}`)}})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, drillAppended{Stream: res.Stream, Partition: int(res.Partition), Offset: res.FirstOffset})
}

func (a *app) setDrillOutage(w http.ResponseWriter, r *http.Request) {
	var body drillOutage
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.On == nil {
		writeError(w, badRequest(`give "on": true or false`))
		return
	}
	a.notify.outage.Store(*body.On)
	a.store.Logger().Warn("notifier drill: outage switch set", "on", *body.On)
	writeJSON(w, http.StatusOK, body)
}
