package admin

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/esraft/esraft/eventstore"
)

// backupWriteTimeout bounds each write of a backup to the client: a
// client that stops reading must not hold the node's copy (a read
// transaction of each shard's index, its segments shared) for ever.
const backupWriteTimeout = 30 * time.Second

// backup streams a backup of this node (eventstore.Store.Backup) as
// application/octet-stream: the file `esraft backup` writes. One backup
// runs at a time per handler; another is refused with 429. A failure
// after the first bytes aborts the connection, so the client sees a
// backup cut short, which a restore refuses.
func (h *Handler) backup(w http.ResponseWriter, r *http.Request) {
	if !h.backupRunning.CompareAndSwap(false, true) {
		writeError(w, http.StatusTooManyRequests, "backup_running", "a backup of this node is already running: try again when it ends")
		return
	}
	defer h.backupRunning.Store(false)
	w.Header().Set("Content-Disposition", `attachment; filename="esraft.backup"`)
	h.stream(w, "application/octet-stream", "backup", func(dw io.Writer) ([]any, error) {
		info, err := h.cfg.Store.Backup(r.Context(), dw, nil)
		return []any{"bytes", info.Bytes(), "applied", info.Applied, "heads", info.Heads}, err
	})
}

// stream answers with what write writes, bounding each write by a
// deadline; it logs what write returns once done. An error before the
// first byte is answered as such; after it, the connection is cut, so the
// client sees an answer cut short.
func (h *Handler) stream(w http.ResponseWriter, contentType, what string, write func(io.Writer) ([]any, error)) {
	w.Header().Set("Content-Type", contentType)
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w)}
	attrs, err := write(dw)
	if err != nil {
		if !dw.wrote {
			h.writeStoreError(w, err)
			return
		}
		h.log.Warn("admin: "+what+" failed while streaming; the connection is cut", "err", err)
		panic(http.ErrAbortHandler)
	}
	h.log.Info("admin: "+what+" sent", attrs...)
}

// deadlineWriter sets a write deadline before each write.
type deadlineWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	wrote bool
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(time.Now().Add(backupWriteTimeout))
	d.wrote = true
	return d.w.Write(p)
}

// maxKeyImport bounds the body of a key import (about 150 bytes a key).
const maxKeyImport = 256 << 20

// exportKeys streams the store's subject keys (eventstore.Store.ExportKeys)
// as JSON lines: what a cluster restored from a backup imports. The
// answer is key material (SECURITY.md, "Crypto-shredding").
func (h *Handler) exportKeys(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	h.stream(w, "application/x-ndjson", "key export", func(dw io.Writer) ([]any, error) {
		n, err := h.cfg.Store.ExportKeys(r.Context(), dw)
		return []any{"keys", n}, err
	})
}

// KeyImport is the answer to a key import.
type KeyImport struct {
	Imported int `json:"imported"`
}

// importKeys adds the keys of an export to the store
// (eventstore.Store.ImportKeys).
func (h *Handler) importKeys(w http.ResponseWriter, r *http.Request) {
	n, err := h.cfg.Store.ImportKeys(r.Context(), http.MaxBytesReader(w, r.Body, maxKeyImport))
	if errors.Is(err, eventstore.ErrInvalidOptions) {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err != nil {
		h.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KeyImport{Imported: n})
}
