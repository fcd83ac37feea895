package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ContentType is what the REST API answers with, as Confluent's registry.
const ContentType = "application/vnd.schemaregistry.v1+json"

// maxRequestBytes bounds a request body: a schema, escaped in a JSON
// string, and the few other fields.
const maxRequestBytes = 2*MaxSchemaBytes + 4096

// Handler serves the subset of Confluent Schema Registry's REST API that
// JSON Schema serializers and tools use, over r. Mount it at the root of
// a base URL (http.StripPrefix). Request and response bodies keep
// Confluent's field names (schemaType, compatibilityLevel, is_compatible,
// error_code) so existing clients work:
//
//	GET  /subjects                                     ["OrderPlaced", ...]
//	GET  /subjects/{subject}/versions                  [1, 2]
//	POST /subjects/{subject}/versions                  {"schema": "...", "schemaType": "JSON"} -> {"id": 7}
//	POST /subjects/{subject}                           {"schema": "..."} -> the version holding it (40403 if none)
//	GET  /subjects/{subject}/versions/{version|latest} {"subject", "id", "version", "schemaType", "schema"}
//	GET  /subjects/{subject}/versions/{version|latest}/schema   the schema itself
//	GET  /schemas/ids/{id}                             {"schema": "...", "schemaType": "JSON"}
//	POST /compatibility/subjects/{subject}/versions/{version|latest}[?verbose=true]
//	                                                   {"is_compatible": false, "messages": [...]}
//	GET  /config, GET /config/{subject}                {"compatibilityLevel": "BACKWARD"}
//	PUT  /config, PUT /config/{subject}                {"compatibility": "FULL"} -> {"compatibility": "FULL"}
//
// Errors are {"error_code": 40401, "message": "..."} with Confluent's codes:
// 40401 subject, 40402 version, 40403 schema not found; 409 incompatible;
// 42201 invalid schema, 42202 invalid version, 42203 invalid
// compatibility level; 50001 the store failed. Only JSON Schema is
// supported (schemaType "JSON"; absent is taken as JSON, not Avro).
func Handler(r *Registry) http.Handler {
	h := &handler{r: r}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /subjects", h.subjects)
	mux.HandleFunc("GET /subjects/{subject}/versions", h.versions)
	mux.HandleFunc("POST /subjects/{subject}/versions", h.register)
	mux.HandleFunc("POST /subjects/{subject}", h.lookupSchema)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}", h.version)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}/schema", h.rawSchema)
	mux.HandleFunc("GET /schemas/ids/{id}", h.byID)
	mux.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", h.compatibility)
	mux.HandleFunc("GET /config", h.getConfig)
	mux.HandleFunc("GET /config/{subject}", h.getConfig)
	mux.HandleFunc("PUT /config", h.putConfig)
	mux.HandleFunc("PUT /config/{subject}", h.putConfig)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Body = http.MaxBytesReader(w, req.Body, maxRequestBytes)
		mux.ServeHTTP(w, req)
	})
}

type handler struct{ r *Registry }

// apiError is Confluent's error body.
type apiError struct {
	status int
	Code   int    `json:"error_code"`
	Msg    string `json:"message"`
}

func (e *apiError) Error() string { return e.Msg }

func write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	var ae *apiError
	var ie *IncompatibleError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ie):
		ae = &apiError{http.StatusConflict, 409, err.Error()}
	case errors.Is(err, ErrSubjectNotFound), errors.Is(err, ErrInvalidSubject):
		ae = &apiError{http.StatusNotFound, 40401, err.Error()}
	case errors.Is(err, ErrVersionNotFound):
		ae = &apiError{http.StatusNotFound, 40402, err.Error()}
	case errors.Is(err, ErrSchemaNotFound):
		ae = &apiError{http.StatusNotFound, 40403, err.Error()}
	case errors.Is(err, ErrInvalidSchema):
		ae = &apiError{http.StatusUnprocessableEntity, 42201, err.Error()}
	case errors.Is(err, ErrInvalidCompatibility):
		ae = &apiError{http.StatusUnprocessableEntity, 42203, err.Error()}
	default:
		ae = &apiError{http.StatusInternalServerError, 50001, err.Error()}
	}
	write(w, ae.status, ae)
}

func (h *handler) subjects(w http.ResponseWriter, req *http.Request) {
	write(w, http.StatusOK, h.r.Subjects())
}

func (h *handler) versions(w http.ResponseWriter, req *http.Request) {
	vs, err := h.r.Versions(req.PathValue("subject"))
	if err != nil {
		fail(w, err)
		return
	}
	write(w, http.StatusOK, vs)
}

// schemaRequest is the body of a registration or a compatibility check.
type schemaRequest struct {
	Schema     string `json:"schema"`
	SchemaType string `json:"schemaType"`
}

func decode(req *http.Request, v any) error {
	dec := json.NewDecoder(req.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, 41301, fmt.Sprintf("request body over %d bytes", mbe.Limit)}
		}
		return &apiError{http.StatusBadRequest, 400, "request body is not the expected JSON: " + err.Error()}
	}
	return nil
}

func (h *handler) schemaBody(req *http.Request) ([]byte, error) {
	var body schemaRequest
	if err := decode(req, &body); err != nil {
		return nil, err
	}
	if t := strings.ToUpper(body.SchemaType); t != "" && t != "JSON" {
		return nil, &apiError{http.StatusUnprocessableEntity, 42201, fmt.Sprintf("schemaType %q is not supported: only JSON", body.SchemaType)}
	}
	return []byte(body.Schema), nil
}

// writeTimeout bounds a change to the registry made over HTTP.
const writeTimeout = 30 * time.Second

func (h *handler) register(w http.ResponseWriter, req *http.Request) {
	text, err := h.schemaBody(req)
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), writeTimeout)
	defer cancel()
	v, err := h.r.Register(ctx, req.PathValue("subject"), text)
	if err != nil {
		if errors.Is(err, ErrInvalidSubject) {
			err = &apiError{http.StatusUnprocessableEntity, 42201, err.Error()}
		}
		fail(w, err)
		return
	}
	write(w, http.StatusOK, map[string]int{"id": v.ID})
}

func parseVersion(s string) (int, error) {
	if s == "latest" || s == "-1" {
		return Latest, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, &apiError{http.StatusUnprocessableEntity, 42202, fmt.Sprintf("version %q: a positive integer or \"latest\"", s)}
	}
	return n, nil
}

// versionBody is a registered version as the API shows it.
type versionBody struct {
	Subject    string `json:"subject"`
	ID         int    `json:"id"`
	Version    int    `json:"version"`
	SchemaType string `json:"schemaType"`
	Schema     string `json:"schema"`
}

func writeVersion(w http.ResponseWriter, v Version) {
	write(w, http.StatusOK, versionBody{Subject: v.Subject, ID: v.ID, Version: v.Version, SchemaType: "JSON", Schema: v.Schema.String()})
}

func (h *handler) lookup(req *http.Request) (Version, error) {
	n, err := parseVersion(req.PathValue("version"))
	if err != nil {
		return Version{}, err
	}
	return h.r.Get(req.PathValue("subject"), n)
}

func (h *handler) version(w http.ResponseWriter, req *http.Request) {
	v, err := h.lookup(req)
	if err != nil {
		fail(w, err)
		return
	}
	writeVersion(w, v)
}

// lookupSchema finds the version of subject whose schema is the one
// given (the same JSON document), as a serializer that does not register
// asks.
func (h *handler) lookupSchema(w http.ResponseWriter, req *http.Request) {
	text, err := h.schemaBody(req)
	if err != nil {
		fail(w, err)
		return
	}
	v, err := h.r.Find(req.PathValue("subject"), text)
	if err != nil {
		fail(w, err)
		return
	}
	writeVersion(w, v)
}

func (h *handler) rawSchema(w http.ResponseWriter, req *http.Request) {
	v, err := h.lookup(req)
	if err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.Write([]byte(v.Schema.String()))
}

func (h *handler) byID(w http.ResponseWriter, req *http.Request) {
	id, err := strconv.Atoi(req.PathValue("id"))
	if err != nil {
		fail(w, fmt.Errorf("%w: id %q", ErrSchemaNotFound, req.PathValue("id")))
		return
	}
	v, err := h.r.ByID(id)
	if err != nil {
		fail(w, err)
		return
	}
	write(w, http.StatusOK, map[string]string{"schema": v.Schema.String(), "schemaType": "JSON"})
}

func (h *handler) compatibility(w http.ResponseWriter, req *http.Request) {
	text, err := h.schemaBody(req)
	if err != nil {
		fail(w, err)
		return
	}
	n, err := parseVersion(req.PathValue("version"))
	if err != nil {
		fail(w, err)
		return
	}
	ins, err := h.r.Check(req.PathValue("subject"), n, text)
	if err != nil {
		fail(w, err)
		return
	}
	out := struct {
		IsCompatible bool     `json:"is_compatible"`
		Messages     []string `json:"messages,omitempty"`
	}{IsCompatible: len(ins) == 0}
	if req.URL.Query().Get("verbose") == "true" {
		out.Messages = []string{}
		for _, in := range ins {
			out.Messages = append(out.Messages, in.String())
		}
	}
	write(w, http.StatusOK, out)
}

func (h *handler) getConfig(w http.ResponseWriter, req *http.Request) {
	mode, _ := h.r.Compatibility(req.PathValue("subject"))
	write(w, http.StatusOK, map[string]Compatibility{"compatibilityLevel": mode})
}

func (h *handler) putConfig(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Compatibility string `json:"compatibility"`
	}
	if err := decode(req, &body); err != nil {
		fail(w, err)
		return
	}
	mode, err := ParseCompatibility(body.Compatibility)
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), writeTimeout)
	defer cancel()
	if err := h.r.SetCompatibility(ctx, req.PathValue("subject"), mode); err != nil {
		if errors.Is(err, ErrInvalidSubject) {
			err = &apiError{http.StatusUnprocessableEntity, 42201, err.Error()}
		}
		fail(w, err)
		return
	}
	write(w, http.StatusOK, map[string]Compatibility{"compatibility": mode})
}
