package runner

// The protocol between the runner and the Python side, in one place. Every
// message is a Go type below; python/pyexec/protocol.py mirrors the keys
// (TestProtocolMatchesPython compares the two).
//
// # Zygote control socket
//
// fd 3 of the zygote, SOCK_SEQPACKET, created by the runner. One msgpack map
// per packet; descriptors travel as SCM_RIGHTS.
//
//  1. zygote → runner: zygoteReady, once the preload modules are imported
//     and the seccomp filter is built.
//  2. runner → zygote: spawnRequest with four descriptors: the sandbox's
//     channel in (read end), channel out (write end), stdout and stderr.
//  3. zygote → runner: spawnedReport with one descriptor, a pidfd of the
//     sandbox it cloned; or spawnFailedReport.
//  4. zygote → runner: exitReport when it has reaped the sandbox: its wait
//     status and rusage, from the kernel. The sandbox never holds the
//     control socket, so no script can forge how it ended.
//
// # Sandbox channel
//
// Two pipes per sandbox, made by the runner: fd 3 (runner → sandbox) and
// fd 4 (sandbox → runner). Pipes, not sockets: no descriptor the sandbox
// holds belongs to a network namespace. Every frame is a 4-byte big-endian
// length and that many bytes of one msgpack map.
//
//  1. sandbox → runner: readyFrame, after its isolation steps and its
//     seccomp filter (python/pyexec/isolation.py).
//  2. runner → sandbox: one executeFrame.
//  3. sandbox → runner: one resultFrame or errorFrame, after it has closed
//     its stdout and stderr (so their EOF tells the runner the output is
//     complete). The runner reads at most this one frame, of at most
//     Limits.ResultBytes + maxReplyEnvelope bytes, and trusts nothing in
//     it: a script can write on fd 4 as well as the sandbox's own code.
//
// A batch (executeFrame.Inputs not nil) streams instead, so the runner
// holds every finished input even if a later one hangs or kills the
// sandbox: an errorFrame (the script did not get as far as its inputs),
// or startedFrame, then for each input in order any number of outputFrames
// (what its Python code printed) and one itemFrame, then one resultsFrame
// (or an errorFrame about the batch's output files). readBatch bounds
// every frame, the output of each item and the results together.
//
// stdout and stderr are pipes of their own, read and capped by the runner.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
)

// Message types.
const (
	msgReady       = "ready"
	msgExecute     = "execute"
	msgResult      = "result"
	msgResults     = "results"
	msgStarted     = "started"
	msgOutput      = "output"
	msgItem        = "item"
	msgError       = "error"
	msgSpawn       = "spawn"
	msgSpawned     = "spawned"
	msgSpawnFailed = "spawn_failed"
	msgExit        = "exit"
)

// Values of executeFrame.InputFormat.
const (
	inputNone    = ""
	inputJSON    = "json"
	inputMsgpack = "msgpack"
)

// Values of executeFrame.ResultFormat.
const (
	resultJSON    = "json"
	resultMsgpack = "msgpack"
)

// zygoteConfig is the zygote's configuration, passed as JSON on its
// command line (python/boot.py).
type zygoteConfig struct {
	// Preload are the modules imported before ready.
	Preload []string `json:"preload"`
	// ScratchBytes caps each sandbox's one tmpfs: /tmp and /dev/shm together.
	ScratchBytes int64 `json:"scratch_bytes"`
	// Policy is what every sandbox checks in its script before running it.
	Policy Policy `json:"policy"`
	// SandboxIDs is the zygote's slice of host ids, [first, count], which
	// its jail maps to themselves; null when sandboxes keep the jail's own
	// ids (hostids.go).
	SandboxIDs []uint32 `json:"sandbox_ids"`
}

// zygoteReady is the zygote's first packet.
type zygoteReady struct {
	Type string `msgpack:"type"`
	// PID is the zygote's pid in the jail's PID namespace (for logs).
	PID int `msgpack:"pid"`
}

// spawnRequest asks for one sandbox; ID names it in the reports.
type spawnRequest struct {
	Type string `msgpack:"type"`
	ID   uint64 `msgpack:"id"`
	// Prewarm has the sandbox run a fixed script before it says ready.
	Prewarm bool `msgpack:"prewarm"`
}

// spawnedReport says the sandbox of ID exists; a pidfd of it comes along.
type spawnedReport struct {
	Type string `msgpack:"type"`
	ID   uint64 `msgpack:"id"`
	// PID is the sandbox's pid in the jail's PID namespace (for logs).
	PID int `msgpack:"pid"`
}

// spawnFailedReport says the sandbox of ID could not be made.
type spawnFailedReport struct {
	Type    string `msgpack:"type"`
	ID      uint64 `msgpack:"id"`
	Message string `msgpack:"message"`
}

// exitReport is how the sandbox of ID ended, as wait4 told the zygote.
type exitReport struct {
	Type string `msgpack:"type"`
	ID   uint64 `msgpack:"id"`
	// Status is the raw wait status.
	Status int `msgpack:"status"`
	// CPUMicros is user + system CPU time of the sandbox and the children
	// it waited for.
	CPUMicros int64 `msgpack:"cpu_us"`
	// MaxRSSKB is the largest resident set of the sandbox, in KiB.
	MaxRSSKB int64 `msgpack:"max_rss_kb"`
}

// exitStatus turns a report's raw wait status into a syscall.WaitStatus.
func (m exitReport) exitStatus() syscall.WaitStatus { return syscall.WaitStatus(m.Status) }

// cpu is the CPU time the report counts.
func (m exitReport) cpu() time.Duration { return time.Duration(m.CPUMicros) * time.Microsecond }

// readyFrame is a sandbox's first frame.
type readyFrame struct {
	Type string `msgpack:"type"`
}

// wireLimits are the rlimits the sandbox applies to itself before the script.
type wireLimits struct {
	CPUSeconds    int64 `msgpack:"cpu_seconds"`
	MemoryBytes   int64 `msgpack:"memory_bytes"`
	Processes     int64 `msgpack:"processes"`
	OpenFiles     int64 `msgpack:"open_files"`
	FileSizeBytes int64 `msgpack:"file_size_bytes"`
}

// executeFrame is the one frame the runner sends a sandbox. It carries no
// cap the runner enforces: those stay on the Go side.
type executeFrame struct {
	Type   string `msgpack:"type"`
	Script string `msgpack:"script"`
	// Entrypoint is "main" (call main) or "none" (run as a cell).
	Entrypoint string `msgpack:"entrypoint"`
	// Input is the JSON text or msgpack bytes of main's argument, per
	// InputFormat; nil with inputNone.
	Input []byte `msgpack:"input"`
	// Inputs, for a batch (nil otherwise), are main's arguments, one call
	// each, in order, encoded like Input.
	Inputs      [][]byte `msgpack:"inputs"`
	InputFormat string   `msgpack:"input_format"`
	// Stdin is the script's standard input; nil when none was given.
	Stdin *string `msgpack:"stdin"`
	// ResultFormat is how the sandbox encodes results: resultJSON (UTF-8
	// JSON text) or resultMsgpack (one msgpack value, bytes as bin).
	ResultFormat string     `msgpack:"result_format"`
	Limits       wireLimits `msgpack:"limits"`
	// DenyImports are top-level modules the script may not import.
	DenyImports []string `msgpack:"deny_imports"`
	// Files are placed in the working directory before the script runs.
	Files []wireFile `msgpack:"files"`
	// OutputFiles are the caps on what the script leaves in OutputDir.
	OutputFiles wireOutputFiles `msgpack:"output_files"`
}

// resultFrame is a successful reply: what main returned, as the execute
// frame's ResultFormat says. The runner checks it is strict JSON, or
// strict msgpack.
type resultFrame struct {
	Type   string `msgpack:"type"`
	Result []byte `msgpack:"result"`
	// Files are the regular files the script left in OutputDir.
	Files []wireFile `msgpack:"files"`
}

// resultsFrame ends a batch: its inputs were all answered (itemFrame).
type resultsFrame struct {
	Type string `msgpack:"type"`
	// Files are the regular files the batch left in OutputDir.
	Files []wireFile `msgpack:"files"`
}

// startedFrame says a batch's script ran and its inputs follow.
type startedFrame struct {
	Type string `msgpack:"type"`
}

// outputFrame is text the current input's Python code printed.
type outputFrame struct {
	Type string `msgpack:"type"`
	// Stream is "stdout" or "stderr".
	Stream string `msgpack:"stream"`
	Text   string `msgpack:"text"`
}

// itemFrame is one input's outcome: Result (encoded like resultFrame's)
// when Kind is "", else an error as in errorFrame. Index is the input's,
// in order.
type itemFrame struct {
	Type      string `msgpack:"type"`
	Index     int    `msgpack:"index"`
	Result    []byte `msgpack:"result"`
	Kind      string `msgpack:"kind"`
	Message   string `msgpack:"message"`
	Traceback string `msgpack:"traceback"`
	Line      int    `msgpack:"line"`
	Offset    int    `msgpack:"offset"`
}

// errorFrame is a failed reply: the script's own failure, of a kind in
// sandboxKinds.
type errorFrame struct {
	Type      string `msgpack:"type"`
	Kind      string `msgpack:"kind"`
	Message   string `msgpack:"message"`
	Traceback string `msgpack:"traceback"`
	Line      int    `msgpack:"line"`
	Offset    int    `msgpack:"offset"`
}

// Bounds of what a sandbox may send, checked by the runner.
const (
	// maxReadyFrame bounds the ready frame.
	maxReadyFrame = 64
	// maxReplyEnvelope is what a reply frame may carry besides the result.
	maxReplyEnvelope = 256 << 10
	// maxErrorMessage and maxErrorTraceback bound an error frame's texts
	// (python/pyexec/script.py cuts them to 4096 and 32768 characters).
	maxErrorMessage   = 4096 * 4
	maxErrorTraceback = 32768 * 4
	// maxControlPacket bounds a packet on the control socket.
	maxControlPacket = 4096
	// maxFrameDepth bounds the nesting of a frame; ours are two deep.
	maxFrameDepth = 8
)

// channelMessages and controlMessages list every message type by name,
// for the protocol test.
var (
	channelMessages = map[string]any{
		msgReady: readyFrame{}, msgExecute: executeFrame{}, msgResult: resultFrame{}, msgError: errorFrame{},
		msgResults: resultsFrame{}, msgStarted: startedFrame{}, msgOutput: outputFrame{}, msgItem: itemFrame{},
	}
	controlMessages = map[string]any{
		msgReady: zygoteReady{}, msgSpawn: spawnRequest{}, msgSpawned: spawnedReport{},
		msgSpawnFailed: spawnFailedReport{}, msgExit: exitReport{},
	}
)

// frameHeaderSize is the length prefix of every channel frame.
const frameHeaderSize = 4

var (
	errFrameTooLarge = errors.New("frame too large")
	// errMalformed marks a frame or packet that is not what the protocol
	// says: the sandbox's fault when it comes from the channel.
	errMalformed = errors.New("malformed message")
)

// writeFrame encodes v as msgpack and writes it with its length prefix in
// one write.
func writeFrame(w io.Writer, v any) error {
	payload, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("cannot encode frame: %w", err)
	}
	buf := make([]byte, frameHeaderSize+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[frameHeaderSize:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("cannot write frame: %w", err)
	}
	return nil
}

// readFramePayload reads one frame's payload of at most maxSize bytes.
func readFramePayload(r io.Reader, maxSize int) ([]byte, error) {
	var header [frameHeaderSize]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, fmt.Errorf("cannot read frame header: %w", err)
	}
	size := binary.BigEndian.Uint32(header[:])
	if uint64(size) > uint64(maxSize) {
		return nil, fmt.Errorf("frame of %d bytes is over the cap of %d: %w", size, maxSize, errFrameTooLarge)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("cannot read frame payload: %w", err)
	}
	return payload, nil
}

// messageType returns the "type" of one msgpack map, checked first (with
// opts) so a malformed message never reaches the decoder's allocations.
func messageType(payload []byte, opts msgpackcheck.Options) (string, error) {
	if err := msgpackcheck.CheckWith(payload, opts); err != nil {
		return "", fmt.Errorf("%w: %w", errMalformed, err)
	}
	var head struct {
		Type string `msgpack:"type"`
	}
	if err := msgpack.Unmarshal(payload, &head); err != nil {
		return "", fmt.Errorf("%w: %w", errMalformed, err)
	}
	return head.Type, nil
}

// decodeStrict decodes payload into v, refusing keys v does not have.
func decodeStrict(payload []byte, v any) error {
	dec := msgpack.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return nil
}

// reply is a single script's one reply: exactly one field is set (a
// batch's frames are read into a batchReply instead).
type reply struct {
	result *resultFrame
	failed *errorFrame
}

// replyShape is what the runner expects of a reply: a batch's (Batch > 0
// inputs) or a single script's, with at most MaxFiles output files.
type replyShape struct {
	Batch    int
	MaxFiles int
}

// maxLen bounds every array and map of a reply with this shape: the
// decoder allocates for a declared count before it reads the elements, so
// a count within the frame's bytes (a nil takes one) could still cost the
// server dozens of times the frame. Every map of the protocol has fewer
// than 16 keys.
func (s replyShape) maxLen() uint64 {
	return uint64(max(s.Batch, s.MaxFiles, 16))
}

// readReply reads the one reply frame of a single script's sandbox, or
// returns an error wrapping errFrameTooLarge, errMalformed, or the read's
// own error (EOF, deadline). A reply of the wrong kind (a batch's frames),
// and any array or map longer than shape allows, are refused before
// anything is decoded.
func readReply(r io.Reader, maxSize int, shape replyShape) (reply, error) {
	payload, err := readFramePayload(r, maxSize)
	if err != nil {
		return reply{}, err
	}
	typ, err := messageType(payload, msgpackcheck.Options{MaxDepth: maxFrameDepth, MaxLen: shape.maxLen()})
	if err != nil {
		return reply{}, err
	}
	switch {
	case typ == msgResult && shape.Batch == 0:
		var res resultFrame
		if err := decodeStrict(payload, &res); err != nil {
			return reply{}, err
		}
		return reply{result: &res}, nil
	case typ == msgError:
		var e errorFrame
		if err := decodeStrict(payload, &e); err != nil {
			return reply{}, err
		}
		return reply{failed: &e}, nil
	default:
		return reply{}, fmt.Errorf("%w: a reply of type %q to a request of %d inputs", errMalformed, clip(typ, 40), shape.Batch)
	}
}
