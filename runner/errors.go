package runner

import (
	"errors"
	"fmt"
	"strings"
)

// Kind says why a script did not produce a result. The server maps each kind
// to an API error type and status; the values are the API's type names.
type Kind string

// The kinds a script can bring on itself. Everything else Execute returns is
// a failure of the service, not of the script.
const (
	KindSyntaxError     Kind = "syntax_error"
	KindMissingMain     Kind = "missing_main"
	KindForbiddenImport Kind = "forbidden_import"
	// KindForbiddenCall: the policy refused a name the script uses.
	KindForbiddenCall         Kind = "forbidden_call"
	KindScriptError           Kind = "script_error"
	KindResultNotSerializable Kind = "result_not_serializable"
	KindTimeout               Kind = "timeout"
	KindMemoryLimit           Kind = "memory_limit"
	KindOutputLimit           Kind = "output_limit"
	// KindOutputFilesLimit: the script left more files, or more bytes of
	// them, in OutputDir than the caps allow.
	KindOutputFilesLimit Kind = "output_files_limit"
	// KindOutputFilesInvalid: a file in OutputDir has a name that cannot
	// go back (see CheckFileName), or is nested too deep.
	KindOutputFilesInvalid Kind = "output_files_invalid"
	KindCrashed            Kind = "sandbox_crashed"
	// KindProtocolError: the sandbox sent something malformed or over a
	// cap on its channel. A script can write there, so it is the script's
	// fault, never the service's.
	KindProtocolError Kind = "protocol_error"
	// KindNotRun: a batch's input that never ran, because an earlier input
	// ended the sandbox (a timeout, a crash, a limit). Only ever an item's
	// error, never a whole answer's.
	KindNotRun Kind = "not_run"
)

// ScriptError is a failure caused by the script: the sandbox did its job and
// the script did not produce a result.
type ScriptError struct {
	Kind    Kind
	Message string
	// Traceback holds the script's own frames, for script_error.
	Traceback string
	// Line and Offset locate a syntax_error (1-based; 0 when unknown).
	Line, Offset int
}

func (e *ScriptError) Error() string { return fmt.Sprintf("%s: %s", e.Kind, e.Message) }

var (
	// ErrSandboxUsed is returned by Execute on a sandbox that already ran a
	// script: sandboxes are never reused.
	ErrSandboxUsed = errors.New("sandbox already executed a script")
	// ErrSandboxDead is returned by Execute on a sandbox that died while idle.
	ErrSandboxDead = errors.New("sandbox died before it was used")
	// ErrZygoteDied means the zygote that forked a sandbox died; the sandbox
	// went with it. The request may succeed if sent again.
	ErrZygoteDied = errors.New("zygote died")
)

// protocolError is a protocol_error finding: the sandbox broke the
// protocol. Its message is clipped, as it may quote what the sandbox sent.
func protocolError(format string, args ...any) *ScriptError {
	return &ScriptError{Kind: KindProtocolError, Message: clip(fmt.Sprintf(format, args...), 1024)}
}

// clip bounds text that came from a sandbox before it reaches an error
// message or a log line.
func clip(text string, max int) string {
	if len(text) <= max {
		return text
	}
	return fmt.Sprintf("%s…[%d bytes cut]", strings.ToValidUTF8(text[:max], ""), len(text)-max)
}
