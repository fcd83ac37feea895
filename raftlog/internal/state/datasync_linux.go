package state

import (
	"os"
	"syscall"
)

// datasync makes f's data durable without its timestamps (fdatasync).
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
