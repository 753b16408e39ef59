package server

import (
	"cmp"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sandbox-exec/pyexec/pool"
	"github.com/sandbox-exec/pyexec/runner"
)

// Config holds the server's limits and identity. Zero fields take the
// defaults of DefaultConfig.
type Config struct {
	// MaxScriptBytes caps "script". Default 1 MiB.
	MaxScriptBytes int
	// MaxBodyBytes caps the whole request body (script, input and
	// envelope); over it the answer is 413. Default 8 MiB.
	MaxBodyBytes int
	// MaxBodyBytesInFlight caps the body bytes of /execute requests held
	// at once, from the moment a request's body starts to be read until
	// the handler has its answer; a request that cannot get its share within
	// half its ReadTimeout is 503 overloaded. At least MaxBodyBytes. Default
	// 256 MiB.
	MaxBodyBytesInFlight int64
	// MaxAnswerBytes caps an answer as a whole, as encoded (JSON escaping
	// makes a control character six bytes): result or results, output,
	// files, every batch item. Over it the answer is 422 output_limit
	// with the output kept, cut to fit. At least 1 MiB. Default 16 MiB.
	MaxAnswerBytes int
	// MaxAnswerBytesInFlight caps the bytes of answers held at once, from
	// their encoding until fasthttp has written them (a client that reads
	// nothing holds its answer until WriteTimeout); an answer that finds
	// no room is 503 overloaded. At least MaxAnswerBytes. Default 256 MiB.
	MaxAnswerBytesInFlight int64
	// MaxBatch caps the elements of "inputs". Default 100.
	MaxBatch int
	// Limits are the runner's limits in force. The server caps a
	// request's "files" with them: their count (MaxFiles), their decoded
	// bytes together (FilesBytes) and each one (FileSizeBytes, the
	// sandbox's file size limit), as the runner caps the files a script
	// leaves in its output directory. Zero MaxFiles: the runner's
	// defaults.
	Limits runner.Limits
	// MaxTimeout is the longest wall-clock time a script may ask for, and
	// the limit of a request that asks for none. Default: the runner's.
	MaxTimeout time.Duration
	// MaxMemoryMB is the largest address space a script may ask for, and
	// the limit of a request that asks for none. Default: the runner's.
	// (Every other sandbox limit is the runner's alone: runner.Config.)
	MaxMemoryMB int64
	// ReadTimeout, WriteTimeout and IdleTimeout are the connection
	// timeouts. Defaults 10s, MaxTimeout + 30s, 60s.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConnections caps the connections open at once: at the cap a new
	// one takes the place of the unproven connection idle the longest
	// (admission), or, when every one has made a valid request or has one
	// being handled, is answered 503 and closed before any request is
	// read. Default: DefaultMaxConnections.
	MaxConnections int
	// AuthToken, when set, is required as "Authorization: Bearer <token>"
	// on /execute.
	AuthToken string
	// Runtimes are the runtimes requests may name ("runtime"), the first
	// the default; /health lists them. Zero: one, "host" (the host's
	// Python), versions unknown.
	Runtimes []Runtime
	// Jail, Mode and Version are reported by /health.
	Jail, Mode, Version string
	// MemoryAccounting is what bounds a sandbox's memory, for /health:
	// "cgroup2" or "rlimit". Zero: "rlimit".
	MemoryAccounting string
	// Policy names the validation policy in force; PolicyRefuses says
	// whether it refuses any import or name (then /health lists
	// "dangerous import blocking", as the original service did).
	Policy        string
	PolicyRefuses bool
	// Logger receives one line per request and every internal error.
	Logger zerolog.Logger
	// QueueTimeout is the pool's longest wait for a sandbox: the last
	// bucket of pyexec_queue_seconds (and, with MaxTimeout, of
	// pyexec_request_seconds). Default: the pool's.
	QueueTimeout time.Duration
	// Metrics is the registry /metrics shows; the server adds its series
	// to it. Zero: NewRegistry().
	Metrics *prometheus.Registry
}

// DefaultConfig returns the defaults; the two per-request maxima are the
// runner's default limits.
func DefaultConfig() Config {
	limits := runner.DefaultConfig().Limits
	return Config{
		MaxScriptBytes: 1 << 20,
		MaxBodyBytes:   8 << 20,
		// 32 bodies of the default 8 MiB: a few times what the sandboxes
		// can run at once, a small part of a replica's memory.
		MaxBodyBytesInFlight: 256 << 20,
		// An answer at the stdout and stderr caps of 1 MiB each, every
		// byte a control character (6 bytes in JSON), fits, with a few
		// MiB of result.
		MaxAnswerBytes: 16 << 20,
		// 16 answers at the cap: several times what the sandboxes make
		// at once, so only clients that do not read their answers fill it.
		MaxAnswerBytesInFlight: 256 << 20,
		MaxBatch:               100,
		Limits:                 limits,
		MaxTimeout:             limits.Timeout,
		MaxMemoryMB:            limits.MemoryBytes >> 20,
		ReadTimeout:            10 * time.Second,
		IdleTimeout:            60 * time.Second,
		MaxConnections:         DefaultMaxConnections(),
		QueueTimeout:           pool.DefaultConfig().AcquireTimeout,
	}
}

// maxConnectionsCeiling bounds the default of MaxConnections whatever the
// descriptor limit: each idle connection costs a goroutine and buffers
// (about 15 KiB), so a limit of a million descriptors must not mean a
// million connections.
const maxConnectionsCeiling = 10000

// DefaultMaxConnections is MaxConnectionsFor with a reserve of 256
// descriptors, for a server whose pool is not known.
func DefaultMaxConnections() int { return MaxConnectionsFor(256) }

// MaxConnectionsFor is the connection cap that leaves reserved
// descriptors of the process's limit (RLIMIT_NOFILE, whose soft value Go
// raises to the hard one at start) to what the server opens besides
// connections (each sandbox's pipes and pidfd, the zygotes', the
// listener), and counts two for each connection: its socket, and the
// duplicate its hang-up watch holds while its request waits or runs. So a
// flood of connections cannot take the descriptors the sandboxes need. At
// most 10000, at least 8.
func MaxConnectionsFor(reserved int) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return maxConnectionsCeiling
	}
	free := int64(lim.Cur) - int64(reserved)
	return int(min(max(free/2, 8), maxConnectionsCeiling))
}

// Runtime describes one runtime: its name and the versions /health shows.
type Runtime struct {
	Name   string `json:"name"`
	Python string `json:"python"`
	Numpy  string `json:"numpy"`
	Pandas string `json:"pandas"`
	// Warm is how many of the warm sandboxes are of this runtime.
	Warm int `json:"warm"`
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Runtimes) == 0 {
		c.Runtimes = []Runtime{{Name: "host"}}
	}
	c.MaxScriptBytes = cmp.Or(c.MaxScriptBytes, d.MaxScriptBytes)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, d.MaxBodyBytes)
	c.MaxBodyBytesInFlight = cmp.Or(c.MaxBodyBytesInFlight, max(d.MaxBodyBytesInFlight, int64(c.MaxBodyBytes)))
	c.MaxAnswerBytes = cmp.Or(c.MaxAnswerBytes, d.MaxAnswerBytes)
	c.MaxAnswerBytes = max(c.MaxAnswerBytes, minAnswerBytes)
	c.MaxAnswerBytesInFlight = cmp.Or(c.MaxAnswerBytesInFlight, max(d.MaxAnswerBytesInFlight, int64(c.MaxAnswerBytes)))
	c.MaxAnswerBytesInFlight = max(c.MaxAnswerBytesInFlight, int64(c.MaxAnswerBytes))
	c.MaxTimeout = cmp.Or(c.MaxTimeout, d.MaxTimeout)
	c.MaxMemoryMB = cmp.Or(c.MaxMemoryMB, d.MaxMemoryMB)
	c.MaxBatch = cmp.Or(c.MaxBatch, d.MaxBatch)
	if c.Limits.MaxFiles == 0 {
		c.Limits = d.Limits
	}
	c.ReadTimeout = cmp.Or(c.ReadTimeout, d.ReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, c.MaxTimeout+30*time.Second)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, d.IdleTimeout)
	c.MaxConnections = cmp.Or(c.MaxConnections, d.MaxConnections)
	c.QueueTimeout = cmp.Or(c.QueueTimeout, d.QueueTimeout)
	return c
}

// maxBodyCap keeps the execute frame under the 64 MiB the sandbox reads
// (python/pyexec/protocol.py, MAX_INBOUND_FRAME), with room for the
// envelope: the frame is at most the body (base64 decodes smaller).
const maxBodyCap = 63 << 20

// Validate checks the limits an operator chose, before the zero ones are
// filled (New fills them). Its messages name the pyexecd flags, where
// operators set these fields.
func (c Config) Validate() error {
	if c.MaxConnections < 0 {
		return fmt.Errorf("--max-connections must be at least 0 (got %d)", c.MaxConnections)
	}
	if minMB := runner.MinMemoryBytes >> 20; c.MaxMemoryMB < minMB {
		return fmt.Errorf("--max-memory-mb must be at least %d (got %d)", minMB, c.MaxMemoryMB)
	}
	if c.MaxBodyBytes > maxBodyCap {
		return fmt.Errorf("--max-body-bytes must be at most %d", maxBodyCap)
	}
	if c.MaxBodyBytesInFlight < int64(c.MaxBodyBytes) {
		return fmt.Errorf("--max-body-bytes-in-flight (%d) must be at least --max-body-bytes (%d): a request of the largest body could never be read", c.MaxBodyBytesInFlight, c.MaxBodyBytes)
	}
	if c.MaxAnswerBytes < minAnswerBytes || c.MaxAnswerBytesInFlight < int64(c.MaxAnswerBytes) {
		return fmt.Errorf("--max-answer-bytes (%d) must be at least %d (room for any error with its traceback), and --max-answer-bytes-in-flight (%d) at least --max-answer-bytes", c.MaxAnswerBytes, minAnswerBytes, c.MaxAnswerBytesInFlight)
	}
	return nil
}
