package admin

import (
	"net/http"
	"time"
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
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="esraft.backup"`)
	dw := &deadlineWriter{w: w, rc: rc}
	info, err := h.cfg.Store.Backup(r.Context(), dw, nil)
	if err != nil {
		if !dw.wrote {
			h.writeStoreError(w, err)
			return
		}
		h.log.Warn("admin: backup failed while streaming; the connection is cut", "err", err)
		panic(http.ErrAbortHandler)
	}
	h.log.Info("admin: backup sent", "bytes", info.Bytes(), "applied", info.Applied, "heads", info.Heads)
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
