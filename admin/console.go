package admin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// The web console under /ui/: server-rendered pages (html/template) whose
// data come from the admin JSON API, fetched by a small script of our own
// (console/console.js). Everything is embedded: no build step, nothing
// fetched from another host, so it works offline. A page needs the same
// credentials as the API (a console session, set by signing in with the
// admin token, or a client certificate); without them it sends the
// browser to the sign-in page.

//go:embed console
var consoleFS embed.FS

var consoleTemplates = template.Must(template.New("console").Funcs(template.FuncMap{"asset": assetURL}).ParseFS(consoleFS, "console/*.html"))

// consoleAssets are the script and stylesheet. Pages name them with
// their version (assetURL), which a browser keeps without asking again;
// a new build has new versions.
var consoleAssets = func() map[string]asset {
	out := map[string]asset{}
	files, _ := fs.Glob(consoleFS, "console/assets/*")
	for _, f := range files {
		b, err := consoleFS.ReadFile(f)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		out[path.Base(f)] = asset{body: b, version: hex.EncodeToString(sum[:8])}
	}
	return out
}()

type asset struct {
	body    []byte
	version string
}

// assetURL is the path of an asset at its version.
func assetURL(name string) (string, error) {
	a, ok := consoleAssets[name]
	if !ok {
		return "", fmt.Errorf("admin: no console asset %q", name)
	}
	return "/ui/assets/" + name + "?v=" + a.version, nil
}

func serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := consoleAssets[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("v") == a.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Header().Set("ETag", `"`+a.version+`"`)
	http.ServeContent(w, r, r.PathValue("file"), time.Time{}, bytes.NewReader(a.body))
}

// consolePage is the data of a console page's template.
type consolePage struct {
	Page  string // the template, and the nav entry shown as current
	Title string
	Node  string
	// CSRF is the session's CSRF token, sent back with every change.
	CSRF string
	// Session: signed in with the token (the page offers to sign out).
	Session bool
	// Name is the stream, event ID or group the page is about.
	Name string
	// Login page: the error to show, where to go after, which ways in.
	Error           string
	Next            string
	TokenLogin      bool
	CertificateHint string
}

// consolePages are the pages behind credentials: path pattern to
// template and title.
var consolePages = []struct{ pattern, page, title string }{
	{"GET /ui/cluster", "cluster", "Cluster"},
	{"GET /ui/streams", "streams", "Streams"},
	{"GET /ui/streams/{name}", "stream", "Stream"},
	{"GET /ui/events/{name}", "event", "Event"},
	{"GET /ui/partitions", "partitions", "Partitions"},
	{"GET /ui/groups", "groups", "Consumer groups"},
	{"GET /ui/groups/{name}", "group", "Consumer group"},
	{"GET /ui/projections", "projections", "Projections"},
}

func (h *Handler) consoleRoutes() {
	m := h.mux
	m.HandleFunc("GET /ui/assets/{file}", h.consoleHeaders(serveAsset))
	m.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/cluster", http.StatusSeeOther)
	})
	m.HandleFunc("GET /ui/login", h.consoleHeaders(h.loginPage))
	m.HandleFunc("POST /ui/login", h.consoleHeaders(h.login))
	m.HandleFunc("POST /ui/logout", h.consoleHeaders(h.logout))
	for _, p := range consolePages {
		m.HandleFunc(p.pattern, h.consoleHeaders(h.consolePage(p.page, p.title)))
	}
	m.HandleFunc("/ui/", h.consoleHeaders(func(w http.ResponseWriter, r *http.Request) {
		h.render(w, http.StatusNotFound, consolePage{Page: "notfound", Title: "Not found", Node: h.raftLog().NodeID()})
	}))
}

// consoleHeaders sets what every console answer carries: a content
// security policy that lets a page load only the console's own script,
// styles and the API (no inline script, no other host), and no framing
// (an action's button cannot be clicked through another site's page).
func (h *Handler) consoleHeaders(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cache-Control", "no-cache")
		next(w, r)
	}
}

// consolePage serves one page to an authenticated browser, and sends any
// other to the sign-in page.
func (h *Handler) consolePage(page, title string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cred, fail := h.authenticate(r)
		if fail != nil {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		p := consolePage{Page: page, Title: title, Node: h.raftLog().NodeID(), Name: r.PathValue("name"), Session: cred.session != ""}
		if p.Session {
			p.CSRF = h.csrfToken(cred.session)
		}
		if p.Name != "" {
			p.Title += " " + p.Name
		}
		h.render(w, http.StatusOK, p)
	}
}

func (h *Handler) render(w http.ResponseWriter, status int, p consolePage) {
	var buf bytes.Buffer
	if err := consoleTemplates.ExecuteTemplate(&buf, p.Page, p); err != nil {
		h.log.Error("admin: console page", "page", p.Page, "err", err)
		http.Error(w, "admin: the console page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (h *Handler) loginData(r *http.Request) consolePage {
	p := consolePage{Page: "login", Title: "Sign in", Node: h.raftLog().NodeID(), Next: safeNext(r.FormValue("next")), TokenLogin: h.cfg.Token != ""}
	if h.cfg.ClientCAs != nil {
		p.CertificateHint = fmt.Sprintf("a client certificate naming an identity of cluster %q", h.cfg.Cluster)
	}
	return p
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	p := h.loginData(r)
	if _, fail := h.authenticate(r); fail == nil {
		http.Redirect(w, r, p.Next, http.StatusSeeOther)
		return
	}
	h.render(w, http.StatusOK, p)
}

// login checks the admin token of the sign-in form and starts a session.
// The form's post must come from this origin (a sign-in forced by another
// site would put the browser in a session of the attacker's choosing).
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	formErr := r.ParseForm()
	p := h.loginData(r)
	switch {
	case formErr != nil:
		p.Error = "The sign-in form could not be read (at most 4 KiB): " + formErr.Error()
		h.render(w, http.StatusBadRequest, p)
	case h.crossOrigin.Check(r) != nil:
		p.Error = "The sign-in came from another site's page and was refused."
		h.render(w, http.StatusForbidden, p)
	case !p.TokenLogin:
		p.Error = "This node's console takes no token: open it with " + p.CertificateHint + "."
		h.render(w, http.StatusBadRequest, p)
	case !h.tokenMatches(r.PostFormValue("token")):
		h.log.Warn("admin: console sign-in with a wrong token", "remote", r.RemoteAddr)
		p.Error = "The admin token is wrong."
		h.render(w, http.StatusUnauthorized, p)
	default:
		exp := time.Now().Add(sessionTTL)
		setSession(w, r, h.newSession(exp), exp)
		http.Redirect(w, r, p.Next, http.StatusSeeOther)
	}
}

// logout ends the browser's session; the post must carry the page's CSRF
// token.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	s, err := h.session(r)
	if err != nil || h.crossOrigin.Check(r) != nil || !h.checkCSRF(r, s) {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	setSession(w, r, "", time.Time{})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext is where to go after signing in: a console path of this
// origin, never another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/cluster"
	}
	return next
}
