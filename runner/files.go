package runner

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
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
// output, or returns nil: it must be safe here (checkSafeName) and
// portable (checkPortableName). CheckFileNames checks a set of names
// against each other.
func CheckFileName(name string) error {
	if err := checkSafeName(name); err != nil {
		return err
	}
	return checkPortableName(name)
}

// checkSafeName says why name is not safe on this host: 1 to 255 bytes of
// UTF-8 without control characters, backslashes or bidirectional
// controls, a relative path of at most 8 parts, none of them empty, "."
// or "..". So no name reaches outside its directory, here or on a client
// that saves files by name (a Windows client reads "\" as a separator).
// The sandbox checks the same (python/pyexec/files.py), so an output name
// that fails it is a forged reply.
func checkSafeName(name string) error {
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

// checkPortableName says why a safe name cannot be saved as it is on
// Windows or macOS, where clients of the service save files by name:
// every part of it must be a name those systems store as given.
//
//   - none of the characters Windows refuses in a name (< > : " | ? *):
//     "D:evil.txt" is a path on drive D, "a.txt:Zone.Identifier" a
//     stream of a.txt, and ":" is macOS's old separator;
//   - no part ending in a dot or a space, which Windows strips ("x.txt "
//     would become "x.txt", another file's name);
//   - no Windows device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9 and
//     their superscript-digit forms, CONIN$, CONOUT$), in any case and
//     with any extension ("nul.txt" opens the null device);
//   - no character that shows nothing: format characters (zero-width
//     space and joiners, the byte order mark, soft hyphen, every
//     bidirectional mark), other default-ignorable characters (variation
//     selectors, Hangul fillers), line and paragraph separators, any
//     space but U+0020, noncharacters, private-use characters (which
//     file-sharing layers use for the characters Windows refuses), and
//     code points Unicode has not assigned (their case and normalisation
//     are not known yet).
func checkPortableName(name string) error {
	if i := strings.IndexFunc(name, invisibleInName); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("file name %q holds %U, an invisible, private-use or unassigned character", name, r)
	}
	if i := strings.IndexAny(name, `<>:"|?*`); i >= 0 {
		return fmt.Errorf("file name %q holds %q, which Windows refuses in a name (a drive, a stream, a wildcard)", name, name[i])
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasSuffix(part, ".") || strings.HasSuffix(part, " ") {
			return fmt.Errorf("file name %q has a part ending in a dot or a space, which Windows strips", name)
		}
		if isDeviceName(part) {
			return fmt.Errorf("file name %q has a part that Windows reads as a device (%s)", name, part)
		}
	}
	return nil
}

// invisibleInName are the characters checkPortableName refuses as
// invisible: a name holding one shows as another name.
func invisibleInName(r rune) bool {
	switch {
	case r == ' ':
		return false
	case unicode.In(r, unicode.Cf, unicode.Zs, unicode.Zl, unicode.Zp, unicode.Co,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Noncharacter_Code_Point):
		return true
	}
	// Assigned: in some general category. What is in none is unassigned.
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
}

// isDeviceName says whether Windows reads a name part as a device: its
// stem (before the first dot, without trailing spaces), in any case, is
// one of the reserved names.
func isDeviceName(part string) bool {
	stem, _, _ := strings.Cut(part, ".")
	stem = strings.ToUpper(strings.TrimRight(stem, " "))
	switch stem {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	for _, prefix := range []string{"COM", "LPT"} {
		if rest, ok := strings.CutPrefix(stem, prefix); ok {
			r, size := utf8.DecodeRuneInString(rest)
			return size > 0 && size == len(rest) && (r >= '0' && r <= '9' || r == '¹' || r == '²' || r == '³')
		}
	}
	return false
}

// CheckFileNames says why a set of names, each already valid, cannot be
// saved together on a file system that ignores case or Unicode
// normalisation (Windows, and macOS by default): two names that are one
// there ("A.TXT" and "a.txt", "café" composed and decomposed), or a file
// whose name is there another's directory ("a" and "A/b.txt"). One would
// overwrite the other, or cannot be made. Directories that are one there
// ("A/x" and "a/y") merge, and are allowed.
func CheckFileNames(names []string) error {
	if len(names) < 2 {
		return nil
	}
	files := make(map[string]string, len(names))
	for _, name := range names {
		key := foldName(name)
		if other, ok := files[key]; ok && other != name {
			return fmt.Errorf("file names %q and %q are the same name where case or Unicode normalisation is ignored (Windows, macOS)", other, name)
		}
		files[key] = name
	}
	for _, name := range names {
		for dir := name; strings.Contains(dir, "/"); {
			dir = dir[:strings.LastIndexByte(dir, '/')]
			if other, ok := files[foldName(dir)]; ok {
				return fmt.Errorf("file name %q is, where case or Unicode normalisation is ignored (Windows, macOS), the directory of %q", other, name)
			}
		}
	}
	return nil
}

// foldName is what a name is on a file system that ignores case and
// normalisation: Unicode's canonical caseless form, NFD, full case
// folding, then NFC (so "ß" and "ss" are one too, as on some of them).
func foldName(name string) string {
	return norm.NFC.String(cases.Fold().String(norm.NFD.String(name)))
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
	names := make([]string, 0, len(sent))
	for _, f := range sent {
		if err := checkSafeName(f.Name); err != nil {
			return nil, protocolError("the sandbox sent an output %v", err)
		}
		if err := checkPortableName(f.Name); err != nil {
			return nil, &ScriptError{Kind: KindOutputFilesInvalid, Message: "the output " + err.Error()}
		}
		names = append(names, f.Name)
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
	if err := CheckFileNames(names); err != nil {
		return nil, &ScriptError{Kind: KindOutputFilesInvalid, Message: "the output " + err.Error()}
	}
	return files, nil
}
