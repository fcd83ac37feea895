package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The console's sessions. Signing in with the admin token sets a cookie
// that stands for the token in the browser without holding it: an expiry
// and an HMAC of it under a key derived from the token, so every node
// with the same token accepts it, nothing is kept per session on the
// server, and changing the token ends every session. The cookie is
// HttpOnly (no script reads it), SameSite=Strict (a request started by
// another site does not carry it) and Secure when served over TLS.
//
// The cookie alone never authorizes a change: a POST or DELETE that it
// authenticates must also carry the session's CSRF token in the
// X-CSRF-Token header (or a csrf form field), which only a page of the
// console has (it is rendered into the page, and is an HMAC of the cookie
// under the same key), and it must not come from another origin
// (http.CrossOriginProtection, which checks every changing request
// whatever its credentials: a client certificate is ambient too).

const (
	sessionCookie = "esraft_console"
	csrfHeader    = "X-CSRF-Token"
	// sessionTTL is how long a console session lasts after signing in.
	sessionTTL = 12 * time.Hour
)

var errSession = errors.New("admin: no valid console session")

// sessionKey is the key sessions are signed with, derived from the
// admin token (zero without one: no sessions then).
func sessionKey(token string) []byte {
	if token == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	m := hmac.New(sha256.New, sum[:])
	m.Write([]byte("esraft console session v1"))
	return m.Sum(nil)
}

func (h *Handler) mac(parts ...string) string {
	m := hmac.New(sha256.New, h.sessKey)
	m.Write([]byte(strings.Join(parts, "\x00")))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newSession returns the cookie value of a session that ends at exp.
func (h *Handler) newSession(exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return "v1." + e + "." + h.mac("session", e)
}

// session returns the request's valid session cookie value.
func (h *Handler) session(r *http.Request) (string, error) {
	if h.sessKey == nil {
		return "", errSession
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", errSession
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return "", errSession
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() >= exp {
		return "", errSession
	}
	if subtle.ConstantTimeCompare([]byte(parts[2]), []byte(h.mac("session", parts[1]))) != 1 {
		return "", errSession
	}
	return c.Value, nil
}

// csrfToken is the CSRF token of a session.
func (h *Handler) csrfToken(session string) string { return h.mac("csrf", session) }

// checkCSRF tells whether a changing request authenticated by session
// carries the session's CSRF token.
func (h *Handler) checkCSRF(r *http.Request, session string) bool {
	if safeMethod(r.Method) {
		return true
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(h.csrfToken(session))) == 1
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// setSession sets (value non-empty) or clears the session cookie.
func setSession(w http.ResponseWriter, r *http.Request, value string, exp time.Time) {
	c := &http.Cookie{Name: sessionCookie, Value: value, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = exp
	}
	http.SetCookie(w, c)
}
