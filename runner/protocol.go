package runner

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
)

// frameHeaderSize is the length prefix of every frame: 4 bytes, big-endian.
const frameHeaderSize = 4

// maxFrameDepth bounds the nesting of a frame; ours are two levels deep.
const maxFrameDepth = 8

// Message types on the control channel; see doc.go.
const (
	msgReady   = "ready"
	msgExecute = "execute"
	msgResult  = "result"
	msgError   = "error"
	// msgExit is sent by a fork-mode sandbox's supervisor when the sandbox
	// died: {"type": "exit", "status": <wait status>, "cpu_seconds": float}.
	msgExit = "exit"
)

// readyMessage is the sandbox's first frame.
type readyMessage struct {
	Type string `msgpack:"type"`
	PID  int    `msgpack:"pid"`
}

// wireLimits are the rlimits the sandbox applies to itself before the script.
type wireLimits struct {
	CPUSeconds    int64 `msgpack:"cpu_seconds"`
	MemoryBytes   int64 `msgpack:"memory_bytes"`
	Processes     int64 `msgpack:"processes"`
	OpenFiles     int64 `msgpack:"open_files"`
	FileSizeBytes int64 `msgpack:"file_size_bytes"`
}

// executeMessage is the one frame the runner sends.
type executeMessage struct {
	Type           string     `msgpack:"type"`
	Script         string     `msgpack:"script"`
	HasInput       bool       `msgpack:"has_input"`
	Input          string     `msgpack:"input"`
	Limits         wireLimits `msgpack:"limits"`
	DenyImports    []string   `msgpack:"deny_imports"`
	MaxResultBytes int        `msgpack:"max_result_bytes"`
	OutputMarker   []byte     `msgpack:"output_marker"`
}

// replyMessage is the sandbox's answer to execute: a result or an error.
type replyMessage struct {
	Type      string  `msgpack:"type"`
	Result    []byte  `msgpack:"result"`
	Kind      string  `msgpack:"kind"`
	Message   string  `msgpack:"message"`
	Traceback string  `msgpack:"traceback"`
	Line      int     `msgpack:"line"`
	Offset    int     `msgpack:"offset"`
	Status    int     `msgpack:"status"`
	CPU       float64 `msgpack:"cpu_seconds"`
}

// writeFrame encodes v as msgpack and writes it with its length prefix in one
// write, so a frame is never interleaved with anything else.
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

// readFrame reads one frame of at most maxSize payload bytes into v.
func readFrame(r io.Reader, maxSize int, v any) error {
	var header [frameHeaderSize]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return fmt.Errorf("cannot read frame header: %w", err)
	}
	size := binary.BigEndian.Uint32(header[:])
	if uint64(size) > uint64(maxSize) {
		return fmt.Errorf("frame of %d bytes is over the cap of %d: %w", size, maxSize, errFrameTooLarge)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return fmt.Errorf("cannot read frame payload: %w", err)
	}
	// The sandbox is hostile: a script can write its own frames on fd 3.
	if err := msgpackcheck.Check(payload, maxFrameDepth); err != nil {
		return fmt.Errorf("cannot decode frame: %w", err)
	}
	if err := msgpack.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("cannot decode frame: %w", err)
	}
	return nil
}
