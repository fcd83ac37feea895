package main

import (
	"database/sql"
	"net/http"

	"github.com/esraft/esraft/admin"
)

// adminHandler is the operations API (package admin) of the service,
// behind the admin bearer token. With no token configured the admin
// endpoints, /metrics and the console (/ui/) are off (403) rather than
// open; /healthz and /readyz answer either way.
//
// It also sets a.protect, which guards the service's other operator
// endpoints (the schema registry's changes) the same way.
func (a *app) adminHandler(token string) (http.Handler, error) {
	if token == "" {
		h := http.NewServeMux()
		off := func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusForbidden, admin.Error{Code: "admin_disabled",
				Error: "admin endpoints are disabled: start the service with -admin-token or ESRAFT_ADMIN_TOKEN to enable them"})
		}
		a.protect = func(http.HandlerFunc) http.HandlerFunc { return off }
		h.HandleFunc("/admin/", off)
		h.HandleFunc("/metrics", off)
		h.HandleFunc("/ui/", off)
		health := admin.HealthHandler(a.store)
		h.Handle("/healthz", health)
		h.Handle("/readyz", health)
		return h, nil
	}
	cfg := admin.Config{Store: a.store, Projections: a.projections, Token: token, Context: a.ctx, Logger: a.store.Logger(), Schemas: a.schemas}
	if a.notify != nil {
		// The notifier's outbox and dedup marks share its database.
		db := a.notify.db.WriteDB()
		cfg.Outboxes = map[string]*sql.DB{"notify": db}
		cfg.Dedups = map[string]*sql.DB{"notify": db}
	}
	h, err := admin.New(cfg)
	if err != nil {
		return nil, err
	}
	a.protect = h.Protect
	return h, nil
}
