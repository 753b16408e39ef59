package runner

import (
	"errors"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// The runner reads about a dozen small /proc files for every request (a
// sandbox's memory, its processes, its CPU). os.ReadFile would make each
// read nine system calls: besides open, read and close, an os.File asks
// the poller to take the descriptor (epoll_ctl, refused for /proc files),
// switches it to non-blocking mode and back (four fcntl) and sizes the
// file (fstat, which /proc answers with 0). Measured under load, those
// were a third of the server's system calls per request. The readers here
// make only the three calls the read needs.

// procReadChunk covers what the runner reads in one read: status, the
// largest, is about 1.5 KiB.
const procReadChunk = 4 << 10

// maxProcFile bounds what readProcFile reads: the files the runner reads
// are a few KiB at most (a children list is bounded by --max-processes).
const maxProcFile = 1 << 20

// readProcFile reads a /proc file whole, refusing one of more than
// maxProcFile bytes.
func readProcFile(path string) ([]byte, error) {
	fd, err := openRetryingEINTR(path, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, procReadChunk)
	for {
		if len(buf) > maxProcFile {
			return nil, &os.PathError{Op: "read", Path: path, Err: errProcFileTooLarge}
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// listProcDir lists the names in a /proc directory ("." and ".." left
// out).
func listProcDir(path string) ([]string, error) {
	fd, err := openRetryingEINTR(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, procReadChunk)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getdents", Path: path, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

var errProcFileTooLarge = errors.New("larger than the runner reads")

func openRetryingEINTR(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}
