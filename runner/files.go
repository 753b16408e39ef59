package runner

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// OutputDir is where a script leaves the files that go back with its
// result (made by the sandbox, python/pyexec/isolation.py). A request's
// files are placed in the working directory, /tmp, before the script runs.
const OutputDir = "/tmp/output"

// File is one file of a request, or one a script left in OutputDir.
type File struct {
	// Name is relative: to /tmp for a request's file, to OutputDir for an
	// output file. CheckFileName says what it may be.
	Name    string
	Content []byte
}

// Bounds of a file name (python/pyexec/files.py has the same).
const (
	maxFileNameBytes = 255
	maxFileNameDepth = 8
)

// CheckFileName says why name cannot name a file of a request or of an
// output, or returns nil: 1 to 255 bytes of UTF-8 without control
// characters, backslashes or bidirectional controls, a relative path of at
// most 8 parts, none of them empty, "." or "..". So no name reaches outside
// its directory, here or on a client that saves files by name (a Windows
// client reads "\" as a separator).
func CheckFileName(name string) error {
	switch {
	case !utf8.ValidString(name):
		return fmt.Errorf("file name %q is not UTF-8", name)
	case name == "" || len(name) > maxFileNameBytes:
		return fmt.Errorf("file name %q must be 1 to %d bytes", clip(name, 64), maxFileNameBytes)
	case strings.ContainsFunc(name, unsafeInName):
		return fmt.Errorf("file name %q holds a control character, a backslash or a bidirectional control", name)
	}
	parts := strings.Split(name, "/")
	if len(parts) > maxFileNameDepth {
		return fmt.Errorf("file name %q is nested deeper than %d", name, maxFileNameDepth)
	}
	for _, part := range parts {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("file name %q must be a relative path without empty, '.' or '..' parts", name)
		}
	}
	return nil
}

// unsafeInName are the characters no file name may hold: C0 and C1
// controls, DEL, the backslash, and the bidirectional controls that make
// a name read otherwise than it is ("r\u202egnp.exe").
func unsafeInName(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f || r == '\\' ||
		r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

// wireFile is a File on the channel.
type wireFile struct {
	Name    string `msgpack:"name"`
	Content []byte `msgpack:"content"`
}

// wireOutputFiles are the caps on a script's output files, sent so that
// the sandbox can say which was passed; the runner checks them again.
type wireOutputFiles struct {
	MaxFiles int `msgpack:"max_files"`
	MaxBytes int `msgpack:"max_bytes"`
}

func toWire(files []File) []wireFile {
	out := make([]wireFile, len(files))
	for i, f := range files {
		out[i] = wireFile(f)
	}
	return out
}

// judgeFiles checks the files a sandbox sent back: valid names, each once,
// within the count and byte caps. A sandbox's own code checks the same, so
// a violation is a script writing frames of its own, or over the caps.
func judgeFiles(sent []wireFile, limits Limits) ([]File, error) {
	if len(sent) > limits.MaxFiles {
		return nil, &ScriptError{Kind: KindOutputFilesLimit,
			Message: fmt.Sprintf("the script left %d files in %s, over the cap of %d", len(sent), OutputDir, limits.MaxFiles)}
	}
	total := 0
	seen := make(map[string]bool, len(sent))
	files := make([]File, 0, len(sent))
	for _, f := range sent {
		if err := CheckFileName(f.Name); err != nil {
			return nil, protocolError("the sandbox sent an output %v", err)
		}
		if seen[f.Name] {
			return nil, protocolError("the sandbox sent the output file %q twice", f.Name)
		}
		seen[f.Name] = true
		total += len(f.Content)
		if total > limits.FilesBytes {
			return nil, &ScriptError{Kind: KindOutputFilesLimit,
				Message: fmt.Sprintf("the files in %s hold more than %d bytes together", OutputDir, limits.FilesBytes)}
		}
		files = append(files, File(f))
	}
	return files, nil
}
