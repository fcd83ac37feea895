package faulttest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Disk faults damage a stopped node's files from outside, knowing only
// the layout of raftlog's data directory (raftlog/DESIGN.md), not the
// formats inside: g<N>/wal/*.wal are raft log segments (raft-wal; raft.db
// with the bolt log store), g<N>/snapshots/ raft's snapshots, and every
// other file under g<N>/ is the state engine's (fsm.db today; the index
// and segment files of the next format). raft-wal's metadata
// (wal-meta.db: term, vote, segment list) is left alone: raft's safety
// rests on a durable vote, and no node can notice a vote it forgot.

// nodeFiles are a node's files by role, paths relative to its directory.
type nodeFiles struct {
	log   []string // raft log segments, oldest first
	state []string // the state engine's files
}

func listNodeFiles(dir string) (nodeFiles, error) {
	var nf nodeFiles
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		parts := strings.Split(rel, string(filepath.Separator))
		if d.IsDir() {
			if len(parts) == 2 && parts[1] == "snapshots" {
				return filepath.SkipDir
			}
			return nil
		}
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "g") || !d.Type().IsRegular() {
			return nil // raftlog.json, the consumer records, the filler
		}
		switch {
		case len(parts) == 3 && parts[1] == "wal":
			if strings.HasSuffix(parts[2], ".wal") {
				nf.log = append(nf.log, rel)
			}
		case len(parts) == 2 && parts[1] == "raft.db":
			nf.log = append(nf.log, rel)
		default:
			nf.state = append(nf.state, rel)
		}
		return nil
	})
	// raft-wal names segments by base index, zero-padded: by name is by age.
	sort.Slice(nf.log, func(i, j int) bool { return filepath.Base(nf.log[i]) < filepath.Base(nf.log[j]) })
	sort.Strings(nf.state)
	return nf, err
}

// dataEnd is the size of path without its trailing zero bytes: the part
// of a preallocated segment that was written.
func dataEnd(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for end := st.Size(); end > 0; {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil && err != io.EOF {
			return 0, err
		}
		for j := n - 1; j >= 0; j-- {
			if buf[j] != 0 {
				return end - n + j + 1, nil
			}
		}
		end -= n
	}
	return 0, nil
}

// flipBytes XORs n bytes of path at off with random non-zero values and
// syncs the file.
func flipBytes(path string, off int64, n int, rng *rand.Rand) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := f.ReadAt(b, off)
	if err != nil && err != io.EOF {
		return err
	}
	for i := range b[:k] {
		b[i] ^= byte(1 + rng.IntN(255))
	}
	if _, err := f.WriteAt(b[:k], off); err != nil {
		return err
	}
	return f.Sync()
}

// damageFlipBytes is how many bytes a corruption fault flips, as in the
// issue's manual runs.
const damageFlipBytes = 16

// damage applies a disk fault of kind to the files of the stopped node
// whose directory is dir, and describes what it did.
func damage(kind, dir string, rng *rand.Rand) (string, error) {
	nf, err := listNodeFiles(dir)
	if err != nil {
		return "", err
	}
	var pool []string
	switch kind {
	case FaultCorruptLogOld, FaultCorruptLogNew, FaultTruncateLog:
		pool = nf.log
	case FaultCorruptState, FaultTruncateState:
		pool = nf.state
	default:
		return "", fmt.Errorf("faulttest: %s is not a disk fault", kind)
	}
	// Files with data, oldest log segment first.
	type file struct {
		rel string
		end int64
	}
	var files []file
	for _, rel := range pool {
		end, err := dataEnd(filepath.Join(dir, rel))
		if err != nil {
			return "", err
		}
		if end > 2*damageFlipBytes {
			files = append(files, file{rel, end})
		}
	}
	if len(files) == 0 {
		return "", fmt.Errorf("faulttest: %s: no file with data to damage in %s", kind, dir)
	}
	var f file
	switch kind {
	case FaultCorruptLogOld:
		f = files[0]
	case FaultCorruptLogNew, FaultTruncateLog:
		f = files[len(files)-1]
	default:
		f = files[rng.IntN(len(files))]
	}
	path := filepath.Join(dir, f.rel)
	var lo, hi int64 // the range the damage starts in
	switch kind {
	case FaultCorruptLogOld:
		// The first half of the oldest segment: entries applied long ago.
		lo, hi = min(64, f.end/4), f.end/2
	case FaultCorruptLogNew:
		// The last 4 KiB written: the newest entries.
		lo, hi = max(0, f.end-4096), f.end-damageFlipBytes
	case FaultCorruptState:
		lo, hi = 0, f.end-damageFlipBytes
	case FaultTruncateLog, FaultTruncateState:
		lo, hi = f.end/2, f.end
	}
	off := lo + rng.Int64N(max(hi-lo, 1))
	switch kind {
	case FaultTruncateLog, FaultTruncateState:
		if err := os.Truncate(path, off); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s truncated to %d bytes (%d written)", f.rel, off, f.end), nil
	}
	if err := flipBytes(path, off, damageFlipBytes, rng); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: %d bytes flipped at offset %d (%d written)", f.rel, damageFlipBytes, off, f.end), nil
}

// fillerName is the file that fills a node's disk.
const fillerName = "filler"

// fillDisk fills the file system of dir with one file, first allocated at
// once, then written until the file system refuses: nothing is left for
// the node. It returns the filler's size.
func fillDisk(dir string) (int64, error) {
	f, err := os.OpenFile(filepath.Join(dir, fillerName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	size := int64(st.Bavail) * st.Bsize
	if size > 0 {
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil && !errors.Is(err, syscall.ENOSPC) {
			return 0, err
		}
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	block := make([]byte, 4096)
	for {
		n, err := f.Write(block)
		end += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			return end, nil
		}
		if err != nil {
			return end, err
		}
	}
}

// unfillDisk gives the space fillDisk took back.
func unfillDisk(dir string) error {
	err := os.Remove(filepath.Join(dir, fillerName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// mountTmpfs mounts a tmpfs of size bytes on dir (root only): a disk of
// its own for one node, which fillDisk can fill without touching the
// machine's.
func mountTmpfs(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		return fmt.Errorf("faulttest: mount a tmpfs of %d bytes on %s: %w", size, dir, err)
	}
	return nil
}

// emptyDir removes everything inside dir, but not dir itself (it may be a
// mount point).
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
