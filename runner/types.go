package runner

import "time"

// Mode says how sandboxes are made.
type Mode string

const (
	// ModeFork forks each sandbox from one jailed zygote that imported the
	// preload modules once; the child isolates itself before it is ready.
	ModeFork Mode = "fork"
	// ModeExec starts a fresh jailed interpreter for each sandbox.
	ModeExec Mode = "exec"
)

// Limits bound one execution.
type Limits struct {
	Timeout time.Duration // wall clock, enforced by the runner (kill)
	CPUTime time.Duration // RLIMIT_CPU
	// MemoryBytes is what a script may use on top of what its sandbox
	// holds when it starts: each process's RLIMIT_AS is its address space
	// at that moment plus this, and the sandbox as a whole (its processes'
	// anonymous memory and its scratch tmpfs) is held to it by the
	// runner's watch or, where the host delegates one, its cgroup.
	MemoryBytes   int64
	Processes     int64 // RLIMIT_NPROC, within the sandbox's user namespace
	OpenFiles     int64 // RLIMIT_NOFILE
	FileSizeBytes int64 // RLIMIT_FSIZE
	OutputBytes   int   // cap on stdout and on stderr, each
	ResultBytes   int   // cap on the encoded result (JSON text or msgpack bytes)
	MaxFiles      int   // cap on the count of output files (and, at the server, of a request's)
	FilesBytes    int   // cap on the bytes of all output files together (and of a request's)
}

// MinMemoryBytes is the smallest memory limit a request may ask for: room
// for a thread's 8 MiB stack and the script's small objects on top of
// what the sandbox holds, and for the watch's tolerance (docs/security.md, "What a
// sandbox can hold").
const MinMemoryBytes int64 = 16 << 20

// InputFormat says how Request.Input is encoded.
type InputFormat int

const (
	// InputJSON: Input is strict JSON text (the server has validated it).
	InputJSON InputFormat = iota
	// InputMsgpack: Input is one msgpack value (validated by the server);
	// bin arrives in Python as bytes and integers stay exact.
	InputMsgpack
)

// ResultFormat says how Output.Result (and each ItemOutput.Result) is
// encoded.
type ResultFormat int

const (
	// ResultJSON: strict, compact JSON text; bytes are base64 text.
	ResultJSON ResultFormat = iota
	// ResultMsgpack: one msgpack value, checked by the runner (UTF-8 str,
	// no ext, no key twice); bytes are bin. For callers that answer in
	// msgpack: the values are those of the JSON, bytes apart.
	ResultMsgpack
)

// Entrypoint says how a script is run.
type Entrypoint string

const (
	// EntrypointMain runs the module, then calls main(input) (main() with
	// no input), awaiting it when main is async. The zero value means it.
	EntrypointMain Entrypoint = "main"
	// EntrypointNone runs the script as a notebook cell: its top-level code
	// with the global INPUT bound to the input (None without one); the
	// value of its last statement, when that is an expression, is the
	// result (else None). A top-level await is allowed. No main is needed
	// or called; the module is __main__, so a script's own
	// `if __name__ == "__main__"` guard runs.
	EntrypointNone Entrypoint = "none"
)

// Request is one script to run.
type Request struct {
	Script string
	// Entrypoint says how it runs. Zero: EntrypointMain.
	Entrypoint Entrypoint
	// Input is what main(input) receives, encoded as InputFormat; nil
	// means main() is called without an argument.
	Input []byte
	// Inputs makes the request a batch: the script runs once, main once
	// per input, in order (state is shared within the batch only). Each
	// is encoded as InputFormat; Input must then be nil.
	Inputs      [][]byte
	InputFormat InputFormat
	// Stdin, when not nil, is the text the script reads on its standard
	// input (sys.stdin; every input of a batch reads it from its start).
	// nil: reading stdin raises EOFError saying that none was given.
	Stdin *string
	// ResultFormat is how the result comes back.
	ResultFormat ResultFormat
	// Files are placed in the working directory, /tmp, before the script
	// runs. Their names must pass CheckFileName; the caller checks them
	// against Limits.MaxFiles and FilesBytes.
	Files []File
	// Timeout and MemoryBytes, when positive, lower the configured wall
	// clock and address-space limits for this request (never raise them).
	Timeout     time.Duration
	MemoryBytes int64
	// Runtime names the runtime the script runs in (the server checked
	// it); the runner ignores it, the executor that routes to one runner
	// per runtime reads it. Empty: the default runtime.
	Runtime string
}

// limitsFor are the limits of one request: the configured ones, lowered
// where the request asks for less.
func (l Limits) limitsFor(req Request) Limits {
	if req.Timeout > 0 && req.Timeout < l.Timeout {
		l.Timeout = req.Timeout
	}
	if req.MemoryBytes > 0 && req.MemoryBytes < l.MemoryBytes {
		l.MemoryBytes = req.MemoryBytes
	}
	return l
}

// Usage is what the sandbox used, from the kernel's rusage.
type Usage struct {
	// CPU is user + system time of the sandbox and its waited-for children.
	CPU time.Duration
	// MaxRSSKB is its largest resident set, in KiB.
	MaxRSSKB int64
}

// ItemOutput is one input's outcome in a batch: Result (encoded as the
// request's ResultFormat) or Err, and what its Python code printed. An
// input that never ran, because an earlier one ended the sandbox, has an
// Err of KindNotRun.
type ItemOutput struct {
	Result         []byte
	Err            *ScriptError
	Stdout, Stderr []byte
}

// Output is what one execution produced. Stdout and Stderr are filled in
// whether or not the script succeeded.
type Output struct {
	// Result is what main returned, encoded as the request's ResultFormat
	// (success only).
	Result         []byte
	Stdout, Stderr []byte
	// Exec is the time from sending the script to having the outcome.
	Exec time.Duration
	// Items are a batch's outcomes, one per input, in order.
	Items []ItemOutput
	// Files are what the script left in OutputDir, sorted by name
	// (success only).
	Files []File
	// Usage is what the sandbox used, from the kernel: the zygote's wait4
	// when the sandbox ended by itself, else its /proc just before the kill.
	Usage Usage
}
