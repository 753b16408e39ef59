// Package python holds the Python half of the sandbox: the program that runs
// inside the jail, imports numpy and pandas, waits for one script and runs it.
// The Go side embeds it so the binary is self-contained; runner starts it with
// "python3 -c". See runner/doc.go for the protocol both halves speak.
package python

import _ "embed"

// SandboxSource is the source of sandbox.py, passed to the interpreter with -c.
//
//go:embed sandbox.py
var SandboxSource string
