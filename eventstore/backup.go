package eventstore

import (
	"context"
	"io"

	"github.com/esraft/esraft/raftlog"
)

// BackupInfo is a backup's manifest (see raftlog.BackupInfo).
type BackupInfo = raftlog.BackupInfo

// Backup writes a consistent copy of this node's store to w while it runs
// (raftlog.Log.Backup), without the encryption key store (the streams
// under KeyStreamPrefix: their events are tombstones in the backup), so a
// backup never holds a key: see Encryption and SECURITY.md. progress, if
// not nil, is told of the bytes written. Restore it with raftlog.Restore
// (esraft restore). A store over a thin client has no replica to copy:
// ErrNoReplica.
func (s *Store) Backup(ctx context.Context, w io.Writer, progress raftlog.Progress) (BackupInfo, error) {
	l, ok := s.log.(*raftlog.Log)
	if !ok {
		return BackupInfo{}, ErrNoReplica
	}
	info, err := l.Backup(ctx, w, raftlog.BackupOptions{Progress: progress, ExcludeKeyPrefixes: []string{KeyStreamPrefix}})
	return info, s.readErr(err)
}
