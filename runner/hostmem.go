package runner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
)

// socketBytesPerDescriptor is the most kernel memory one descriptor of a
// sandbox can hold in socket buffers: the host's default buffer of 208
// KiB (net.core.wmem_default and rmem_default, which a sandbox's network
// namespace cannot change and seccomp keeps it from raising) with the
// kernel's overhead, measured at 226-228 KiB per descriptor of filled
// socket pairs (TestSocketMemoryIsBounded). A pipe holds less (64 KiB).
// No socket listens, so no buffer is held without a descriptor.
const socketBytesPerDescriptor = 228 << 10

// sandboxStartBytes bounds what an idle sandbox holds of its own before
// its script (copied pages, page tables, its warm-up's scratch): about 6
// MB measured (docs/performance.md).
const sandboxStartBytes = 16 << 20

// watchSlackPerCPU is what one CPU can fill between two readings of the
// memory watch: 10 ms at up to about 5.6 GB/s (huge pages), rounded up.
const watchSlackPerCPU = 64 << 20

// SandboxMemoryBound is the most host memory one running sandbox can hold
// under limits: its limit on top of what it held at start, what its
// processes can fill between two readings of the memory watch on cpus
// CPUs (none with a cgroup, which enforces the limit as pages are
// charged), and the kernel's socket buffers of every descriptor it may
// open (processes × open files). docs/security.md, "What a sandbox can hold".
func SandboxMemoryBound(limits Limits, cgroup bool, cpus int) int64 {
	bound := limits.MemoryBytes + sandboxStartBytes + limits.Processes*limits.OpenFiles*socketBytesPerDescriptor
	if !cgroup {
		bound += int64(cpus) * watchSlackPerCPU
	}
	return bound
}

// HostMemory is the memory this service may use: the host's MemAvailable
// (/proc/meminfo), or its own cgroup v2 group's memory.max when that is
// lower (a container's limit; read, never written). source says which.
func HostMemory() (bytes int64, source string, err error) {
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, "", fmt.Errorf("cannot read the host's memory: %w", err)
	}
	bytes, err = meminfoField(meminfo, "MemAvailable")
	if err != nil {
		return 0, "", err
	}
	source = "MemAvailable"
	if limit, ok := ownCgroupMemoryMax(); ok && limit < bytes {
		bytes, source = limit, "cgroup memory.max"
	}
	return bytes, source, nil
}

// meminfoField reads one "Name: N kB" line of /proc/meminfo, in bytes.
func meminfoField(meminfo []byte, name string) (int64, error) {
	for _, line := range bytes.Split(meminfo, []byte("\n")) {
		value, ok := bytes.CutPrefix(line, []byte(name+":"))
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(value), []byte(" kB"))), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/meminfo %s: %w", name, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("/proc/meminfo has no " + name)
}

// ownCgroupMemoryMax is memory.max of this process's cgroup v2 group, when
// it has one with a limit.
func ownCgroupMemoryMax() (int64, bool) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	for _, line := range bytes.Split(self, []byte("\n")) {
		path, ok := bytes.CutPrefix(line, []byte("0::"))
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", filepath.Clean("/"+string(path)), "memory.max"))
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(data)), 10, 64)
		return n, err == nil // "max" is no limit
	}
	return 0, false
}

// FitMaxBusy checks that maxBusy running sandboxes of perSandbox bytes,
// plus fixed bytes (zygotes, warm sandboxes), fit in available. When they
// do not, an explicit maxBusy is an error, and a default one is lowered to
// what fits (at least 1, else an error).
func FitMaxBusy(maxBusy int, explicit bool, perSandbox, fixed, available int64) (int, error) {
	need := int64(maxBusy)*perSandbox + fixed
	if need <= available {
		return maxBusy, nil
	}
	fits := int((available - fixed) / perSandbox)
	if explicit || fits < 1 {
		return 0, fmt.Errorf("%d running sandboxes of up to %d MiB each, with %d MiB for the zygotes and warm sandboxes, need %d MiB, more than the %d MiB this host has available; lower --max-busy, --max-memory-mb, --max-processes or --max-open-files (docs/security.md, \"What a sandbox can hold\")",
			maxBusy, perSandbox>>20, fixed>>20, need>>20, available>>20)
	}
	return fits, nil
}

// zygoteBytes and warmSandboxBytes are generous figures for what a zygote
// (about 70 MB resident, 94 with matplotlib) and an idle warm sandbox
// (about 6 MB in fork mode, 48 MB in exec mode) hold.
const (
	zygoteBytes      = 128 << 20
	warmSandboxBytes = 64 << 20
)

// fixedMemory is what the zygotes of runtimes runtimes (each with its
// own, each with its successor for most of its life, and a rotated one
// alive for its last sandboxes) and warm idle sandboxes hold, whatever runs.
func fixedMemory(zygotes, runtimes, warm int) int64 {
	return int64(runtimes)*int64(3*zygotes)*zygoteBytes + int64(warm)*warmSandboxBytes
}

// MemoryBounds are the figures FitHostMemory checks, on a host with cpus
// CPUs: the most one running sandbox can hold (SandboxMemoryBound), and
// what the zygotes of runtimes runtimes and warm idle sandboxes hold
// whatever runs.
func (c Config) MemoryBounds(warm, runtimes, cpus int) (perSandbox, fixed int64) {
	return SandboxMemoryBound(c.Limits, c.Cgroups != nil, cpus), fixedMemory(c.Zygotes, runtimes, warm)
}

// FitHostMemory checks that maxBusy running sandboxes, each at the most
// it can hold (SandboxMemoryBound), fit in the host's memory beside the
// zygotes of every runtime (each with its successor) and warm idle
// sandboxes: an explicit maxBusy that does not is refused, a default one
// lowered to what fits, and either way the figures go to c.Logger. It
// returns the maxBusy to use; when the host's memory cannot be read,
// maxBusy as is.
func (c Config) FitHostMemory(maxBusy int, explicit bool, warm, runtimes int) (int, error) {
	logger := c.Logger
	available, source, err := HostMemory()
	if err != nil {
		logger.Warn().Err(err).Msg("cannot check --max-busy against the host's memory")
		return maxBusy, nil
	}
	perSandbox, fixed := c.MemoryBounds(warm, runtimes, runtime.NumCPU())
	fitted, err := FitMaxBusy(maxBusy, explicit, perSandbox, fixed, available)
	if err != nil {
		return 0, fmt.Errorf("refusing to start: %w", err)
	}
	event, msg := logger.Info(), "memory: --max-busy running sandboxes at their bound fit the host's memory"
	if fitted != maxBusy {
		event, msg = logger.Warn().Int("max_busy_default", maxBusy), "memory: --max-busy lowered from its default so that its running sandboxes fit the host's memory"
	}
	event.Int("max_busy", fitted).Int64("sandbox_bound_mib", perSandbox>>20).Int64("fixed_mib", fixed>>20).
		Int64("available_mib", available>>20).Str("available_from", source).
		Msg(msg)
	return fitted, nil
}
