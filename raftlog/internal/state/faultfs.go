package state

import (
	"sync/atomic"
	"syscall"
)

// FaultFS is an FS for tests that fails segment writes on demand, as a
// full disk does: while Fail is set, every WriteAt writes half of what it
// is given and returns ENOSPC (a torn write), and Datasync fails the same.
// Reads, truncation and removal work.
type FaultFS struct {
	FS
	Fail atomic.Bool
	// Failed counts the writes and syncs failed.
	Failed atomic.Int64
}

// NewFaultFS returns a FaultFS over the operating system's file system.
func NewFaultFS() *FaultFS { return &FaultFS{FS: OSFS{}} }

func (fs *FaultFS) OpenFile(name string, create bool) (File, error) {
	f, err := fs.FS.OpenFile(name, create)
	if err != nil {
		return nil, err
	}
	return faultFile{File: f, fs: fs}, nil
}

type faultFile struct {
	File
	fs *FaultFS
}

func (f faultFile) WriteAt(b []byte, at int64) (int, error) {
	if f.fs.Fail.Load() {
		f.fs.Failed.Add(1)
		n, _ := f.File.WriteAt(b[:len(b)/2], at)
		return n, syscall.ENOSPC
	}
	return f.File.WriteAt(b, at)
}

func (f faultFile) Datasync() error {
	if f.fs.Fail.Load() {
		f.fs.Failed.Add(1)
		return syscall.ENOSPC
	}
	return f.File.Datasync()
}
