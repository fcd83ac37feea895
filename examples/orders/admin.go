package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// requireAdmin lets a request through to h only with the admin token as
// a bearer token (Authorization: Bearer <token>). With no token
// configured the admin endpoints are off (403) rather than open; a
// missing or wrong token is a 401 with a WWW-Authenticate challenge
// (RFC 6750). The token is compared in constant time, through SHA-256 so
// that its length does not show either.
func requireAdmin(token string, h http.HandlerFunc) http.HandlerFunc {
	want := sha256.Sum256([]byte(token))
	return func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{
				"error": "admin endpoints are disabled: start the service with -admin-token or ESRAFT_ADMIN_TOKEN to enable them"})
			return
		}
		got, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orders admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{
				"error": "admin endpoints need the admin token: send Authorization: Bearer <token>"})
			return
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orders admin", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the admin token is wrong"})
			return
		}
		h(w, r)
	}
}

// bearerToken is the token of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
