package runner

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/sandbox-exec/pyexec/internal/cgroupv2"
)

// Config says how sandboxes are made. Zero fields take the defaults listed.
type Config struct {
	// Jail wraps every sandbox (exec mode) or the zygote (fork mode).
	// Required.
	Jail Jail
	// Mode is ModeFork or ModeExec. Zero: ModeFork.
	Mode Mode
	// Logger receives zygote deaths and restarts. Zero: no logging.
	Logger zerolog.Logger
	// Python is the interpreter inside the jail. Zero: /usr/bin/python3.
	Python string
	// Preload are the modules imported before the sandbox says ready.
	// Zero: numpy and pandas.
	Preload []string
	// StartTimeout bounds how long a new sandbox may take to say ready.
	// Zero: 30s.
	StartTimeout time.Duration
	// TmpBytes caps each sandbox's one private tmpfs, which holds its /tmp
	// and /dev/shm together. Zero: 64 MiB.
	TmpBytes int64
	// SandboxUID and SandboxGID are the host ids the jail runs as when the
	// server runs as root. Zero: 65534 (nobody/nogroup). The sandbox never
	// runs as host root: New refuses a configuration that would.
	SandboxUID, SandboxGID uint32
	// SandboxIDs is the range of host ids sandboxes take their own uid and
	// gid from, when the server runs as root and the jail is bubblewrap
	// (hostids.go): one id per live sandbox, so that the kernel's per-user
	// counters are per sandbox. Empty: every sandbox runs as SandboxUID.
	SandboxIDs IDRange
	// Prewarm makes each fork-mode sandbox run a fixed script through the
	// execute path before it says ready, paying its copy-on-write faults
	// and first-run costs off the request path (slower to build, faster to
	// answer). Exec mode ignores it.
	Prewarm bool
	// DenyImports are top-level modules a script may not import
	// (defence in depth only; the jail is the boundary). Zero: none.
	DenyImports []string
	// ZygoteMaxForks and ZygoteMaxAge rotate the fork-mode zygote: after
	// that many sandboxes, or that long, a fresh zygote (new address-space
	// layout, new hash seed) takes over and the old one is retired once its
	// sandboxes are gone. Zero: 200 and 10 minutes (see DefaultConfig).
	ZygoteMaxForks int
	ZygoteMaxAge   time.Duration
	// Zygotes is how many zygotes serve at once in fork mode: the clone
	// of the big interpreter happens in its zygote, so one zygote per CPU
	// lets sandboxes be made in parallel. Zero: GOMAXPROCS.
	Zygotes int
	// Limits bound every execution; a Request may lower its wall clock and
	// memory. Zero fields take DefaultConfig's.
	Limits Limits
	// Policy is checked in every script before it runs. Zero (no name):
	// SeedPolicy, the original service's.
	Policy Policy
	// Cgroups, where the host delegates cgroup v2 (see cgroupv2.Detect),
	// gives every sandbox a group of its own: Limits.MemoryBytes bounds
	// all its processes and the tmpfs pages they write together, and
	// Limits.Processes its pids. Nil: rlimits alone bound a sandbox.
	Cgroups *cgroupv2.Tree
}

// DefaultConfig returns the defaults: those of the original service where
// it had one (memory 1 GiB, CPU 300 s, wall 30 s). Flags derive theirs
// from it. Prewarm is true here; a zero Config means false.
func DefaultConfig() Config {
	return Config{
		Mode:           ModeFork,
		Python:         "/usr/bin/python3",
		Preload:        []string{"numpy", "pandas"},
		StartTimeout:   30 * time.Second,
		TmpBytes:       64 << 20,
		SandboxUID:     65534,
		SandboxIDs:     DefaultSandboxIDs,
		SandboxGID:     65534,
		Prewarm:        true,
		ZygoteMaxForks: 200,
		ZygoteMaxAge:   10 * time.Minute,
		Zygotes:        runtime.GOMAXPROCS(0),
		Policy:         SeedPolicy(),
		Limits: Limits{
			Timeout:       30 * time.Second,
			CPUTime:       300 * time.Second,
			MemoryBytes:   1 << 30,
			Processes:     16,
			OpenFiles:     64,
			FileSizeBytes: 16 << 20,
			OutputBytes:   1 << 20,
			ResultBytes:   8 << 20,
			MaxFiles:      32,
			FilesBytes:    8 << 20,
		},
	}
}

// withDefaults fills every zero field of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Mode = cmp.Or(c.Mode, d.Mode)
	c.Python = cmp.Or(c.Python, d.Python)
	if c.Preload == nil {
		c.Preload = d.Preload
	}
	c.StartTimeout = cmp.Or(c.StartTimeout, d.StartTimeout)
	c.TmpBytes = cmp.Or(c.TmpBytes, d.TmpBytes)
	c.SandboxUID = cmp.Or(c.SandboxUID, d.SandboxUID)
	c.SandboxGID = cmp.Or(c.SandboxGID, d.SandboxGID)
	c.ZygoteMaxForks = cmp.Or(c.ZygoteMaxForks, d.ZygoteMaxForks)
	c.ZygoteMaxAge = cmp.Or(c.ZygoteMaxAge, d.ZygoteMaxAge)
	c.Zygotes = cmp.Or(c.Zygotes, d.Zygotes)
	if c.Policy.Name == "" {
		c.Policy = d.Policy
	}
	if c.Policy.DenyImports == nil {
		c.Policy.DenyImports = []string{}
	}
	if c.Policy.DenyCalls == nil {
		c.Policy.DenyCalls = []string{}
	}
	l, dl := &c.Limits, d.Limits
	l.Timeout = cmp.Or(l.Timeout, dl.Timeout)
	l.CPUTime = cmp.Or(l.CPUTime, dl.CPUTime)
	l.MemoryBytes = cmp.Or(l.MemoryBytes, dl.MemoryBytes)
	l.Processes = cmp.Or(l.Processes, dl.Processes)
	l.OpenFiles = cmp.Or(l.OpenFiles, dl.OpenFiles)
	l.FileSizeBytes = cmp.Or(l.FileSizeBytes, dl.FileSizeBytes)
	l.OutputBytes = cmp.Or(l.OutputBytes, dl.OutputBytes)
	l.ResultBytes = cmp.Or(l.ResultBytes, dl.ResultBytes)
	l.MaxFiles = cmp.Or(l.MaxFiles, dl.MaxFiles)
	l.FilesBytes = cmp.Or(l.FilesBytes, dl.FilesBytes)
	return c
}

// MaxFilesCap keeps a request's files, each in up to 8 directories,
// within the 4096 inodes of a sandbox's scratch tmpfs.
const MaxFilesCap = 400

// fileOverhead is the room one file may take in the scratch tmpfs beyond
// its bytes: its inode and directories, its last page rounded up.
const fileOverhead = 4096

// FitFilesBytes shrinks Limits.FilesBytes, when a request's files at that
// cap would not fit in the scratch tmpfs of TmpBytes, to half of what the
// tmpfs leaves, keeping the rest for the script. For a FilesBytes the
// operator did not choose; Validate refuses one that does not fit.
func (c *Config) FitFilesBytes() {
	if room := c.TmpBytes - int64(c.Limits.MaxFiles)*fileOverhead; int64(c.Limits.FilesBytes) > room {
		c.Limits.FilesBytes = int(max(room/2, 0))
	}
}

// Validate checks a Config whose fields are all set (as DefaultConfig's
// are; New validates after filling the zero ones). Its messages name the
// pyexecd flags, as that is where operators set these fields.
func (c Config) Validate() error {
	if c.Mode != ModeFork && c.Mode != ModeExec {
		return fmt.Errorf("--mode %q is not supported; use fork or exec", c.Mode)
	}
	if c.SandboxUID == 0 || c.SandboxGID == 0 {
		return errors.New("--sandbox-uid and --sandbox-gid must not be 0: sandboxes never run as host root")
	}
	if err := c.SandboxIDs.Validate(c.SandboxUID, c.SandboxGID); err != nil {
		return fmt.Errorf("--sandbox-ids: %w", err)
	}
	if c.ZygoteMaxForks < 1 || c.ZygoteMaxAge <= 0 || c.Zygotes < 1 {
		return errors.New("--zygotes and --zygote-max-forks must be at least 1 and --zygote-max-age positive")
	}
	// The request's files must fit where the sandbox writes them: its
	// scratch tmpfs of TmpBytes and 4096 inodes (a file may need 8
	// directories), each file rounded up to whole pages.
	l := c.Limits
	if l.MaxFiles < 1 || l.MaxFiles > MaxFilesCap || l.FilesBytes < 1 ||
		int64(l.FilesBytes)+int64(l.MaxFiles)*fileOverhead > c.TmpBytes {
		return fmt.Errorf("--max-files must be 1 to %d, and --max-files-bytes at least 1 and, with 4 KiB per file, at most --tmp-mb (%d MiB): a request's files are written to the sandbox's /tmp", MaxFilesCap, c.TmpBytes>>20)
	}
	for _, name := range c.Preload {
		if strings.ContainsAny(name, ", ") || name == "" {
			return fmt.Errorf("preload module name %q is not valid", name)
		}
	}
	return nil
}
