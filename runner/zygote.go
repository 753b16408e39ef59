package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"github.com/sandbox-exec/pyexec/internal/msgpackcheck"
)

// zygote is one running zygote: a jailed interpreter that imported the
// preload modules once and forks a sandbox per spawn request. See
// protocol.go for its control socket and doc.go for the process tree.
type zygote struct {
	proc    *jailedProc
	control *net.UnixConn // SOCK_SEQPACKET
	stderr  *cappedPipe
	started time.Time
	// gone is closed once the zygote is dead or closed: its sandboxes are
	// gone with it.
	gone      chan struct{}
	goneOnce  sync.Once
	readerEnd chan struct{} // closed when readLoop returned

	writeMu sync.Mutex // serialises spawn requests on control

	mu      sync.Mutex // guards the fields below
	pending map[uint64]*spawnWait
	nextID  uint64
	forks   int // spawn requests sent
	// shareOfForks is how many sandboxes it makes before it is rotated (0:
	// no bound, exec mode's zygote of one sandbox).
	shareOfForks int
	live         int  // sandboxes spawned and not yet closed
	retired      bool // no more spawns; close once live is 0
	closed       bool
	// spawnTimeouts counts spawn requests in a row the zygote did not
	// answer in time; see stuck.
	spawnTimeouts int

	// baselines reads what each of its sandboxes holds at ready, for the
	// memory watch.
	baselines baselineSampler
}

// maxSpawnTimeouts is how many spawns in a row a zygote may leave
// unanswered before it is taken for stuck (stopped, say) and killed, so
// its supervisor replaces it rather than waiting for rotation.
const maxSpawnTimeouts = 2

// spawnAnswered records whether the zygote answered a spawn in time, and
// kills a zygote that keeps not answering.
func (z *zygote) spawnAnswered(answered bool) {
	z.mu.Lock()
	if answered {
		z.spawnTimeouts = 0
	} else {
		z.spawnTimeouts++
	}
	stuck := z.spawnTimeouts >= maxSpawnTimeouts
	z.mu.Unlock()
	if stuck {
		z.proc.kill()
	}
}

// spawnWait is where the control reader delivers one sandbox's reports.
type spawnWait struct {
	spawned chan spawnOutcome // buffered 1
	exit    chan exitReport   // buffered 1
}

type spawnOutcome struct {
	pidfd int
	err   error
}

// Up a layer (doc.go, "Files"): jailCommand, startZygote, zygoteArgv and
// spawn are the Runner's methods, kept with the zygote they start and ask.
//
// jailCommand returns a command that runs argv in the jail as the
// sandbox's host uid, in its own process group, killed if the server dies.
func (r *Runner) jailCommand(argv []string, idMap *IDMapHandoff) *exec.Cmd {
	path, args := r.cfg.Jail.Command(JailSpec{Argv: argv, Env: sandboxEnv(), IDMap: idMap})
	cmd := exec.Command(path, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: r.credential,
	}
	return cmd
}

// startZygote starts a zygote and waits until it says ready.
func (r *Runner) startZygote(ctx context.Context) (*zygote, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot create zygote control socketpair: %w", err)
	}
	childEnd := os.NewFile(uintptr(fds[1]), "zygote-control-child")
	control, err := fileConn(os.NewFile(uintptr(fds[0]), "zygote-control"))
	if err != nil {
		childEnd.Close()
		return nil, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		childEnd.Close()
		control.Close()
		return nil, fmt.Errorf("cannot create zygote stderr pipe: %w", err)
	}
	var ids IDRange
	jailStarted := false
	if r.ids != nil {
		if ids, err = r.ids.take(); err != nil {
			childEnd.Close()
			control.Close()
			stderrR.Close()
			stderrW.Close()
			return nil, err
		}
		// Given back here if no jail started, else once the jail is gone,
		// and with it every sandbox of the zygote.
		defer func() {
			if !jailStarted {
				r.ids.give(ids)
			}
		}()
	}
	argv, err := r.zygoteArgv(ids)
	var handoff *idMapHandoff
	if err == nil && r.ids != nil {
		handoff, err = newIDMapHandoff()
	}
	if err != nil {
		childEnd.Close()
		control.Close()
		stderrR.Close()
		stderrW.Close()
		return nil, err
	}
	cmd := r.jailCommand(argv, handoff.spec())
	cmd.Stderr = stderrW
	cmd.ExtraFiles = append([]*os.File{childEnd}, handoff.jailEnds()...)
	proc, err := startJailed(cmd)
	// Only the zygote holds these now: a zygote that dies at once is seen
	// as EOF on the control socket, not after the start timeout.
	stderrW.Close()
	childEnd.Close()
	handoff.closeJailEnds()
	if err != nil {
		control.Close()
		stderrR.Close()
		handoff.close()
		return nil, err
	}
	if r.ids != nil {
		jailStarted = true
		go func() {
			<-proc.exited
			r.ids.give(ids)
		}()
	}
	z := &zygote{
		proc: proc, control: control, stderr: newCappedPipe(stderrR), started: time.Now(),
		gone: make(chan struct{}), readerEnd: make(chan struct{}), pending: map[uint64]*spawnWait{},
	}

	deadline := time.Now().Add(r.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if handoff != nil {
		// The jail waits for its maps before it starts the zygote.
		err = handoff.mapJail(deadline, r.cfg.SandboxUID, r.cfg.SandboxGID, ids)
		handoff.close()
		if err != nil {
			err = fmt.Errorf("cannot map the jail's ids: %w", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { control.SetReadDeadline(time.Now()) })
	defer stop()
	var ready zygoteReady
	if err == nil {
		control.SetReadDeadline(deadline)
		buf := make([]byte, maxControlPacket)
		var n int
		if n, err = control.Read(buf); err == nil {
			err = decodeStrict(buf[:n], &ready)
		}
	}
	if err == nil && ready.Type != msgReady {
		err = fmt.Errorf("zygote sent %q instead of ready", clip(ready.Type, 40))
	}
	if err != nil {
		// Its stderr up to EOF (the jail's own error lines), then close,
		// which would cut the pipe short.
		z.proc.kill()
		tail := stderrTail(z.stderr)
		close(z.readerEnd) // no reader was started
		z.close()
		return nil, fmt.Errorf("zygote did not say ready: %w (%s)", err, tail)
	}
	control.SetReadDeadline(time.Time{})
	go z.readLoop()
	go func() {
		select {
		case <-proc.exited:
		case <-z.readerEnd:
		}
		z.markGone()
	}()
	return z, nil
}

// zygoteArgv is the zygote's command line inside the jail: -s and -P keep
// the user site and the working directory off sys.path, -B writes no bytecode,
// -u makes stdout and stderr unbuffered so print() and os.write() reach
// the pipes in order. python/boot.py loads the embedded package.
func (r *Runner) zygoteArgv(ids IDRange) ([]string, error) {
	zc := zygoteConfig{Preload: r.cfg.Preload, ScratchBytes: r.cfg.TmpBytes, Policy: r.cfg.Policy}
	if ids.Count > 0 {
		zc.SandboxIDs = []uint32{ids.First, ids.Count}
	}
	config, err := json.Marshal(zc)
	if err != nil {
		return nil, fmt.Errorf("cannot encode zygote config: %w", err)
	}
	// -s -P is -I without -E: the jail's environment is exactly
	// sandboxEnv (no PYTHONPATH, PYTHONHOME or PYTHONSTARTUP can be in it),
	// and its PYTHONMALLOC must apply.
	argv := []string{r.cfg.Python, "-s", "-P", "-B", "-u", "-c", r.python.Boot, string(config)}
	for _, m := range r.python.Modules {
		argv = append(argv, m.Name, m.Source)
	}
	return argv, nil
}

// fileConn turns one end of a socketpair into a net.UnixConn, which has
// deadlines.
func fileConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close() // net.FileConn dups the descriptor
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("cannot wrap control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("control socket is a %T, not a unix socket", c)
	}
	return uc, nil
}

// readLoop delivers the zygote's reports to the sandboxes waiting for
// them, until the control socket fails (the zygote died or was closed).
func (z *zygote) readLoop() {
	defer close(z.readerEnd)
	buf := make([]byte, maxControlPacket)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := z.control.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		fds := receivedFDs(oob[:oobn])
		if !z.deliver(buf[:n], fds) {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}

// receivedFDs returns the descriptors of SCM_RIGHTS messages in oob.
func receivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// deliver hands one control packet to its sandbox; it reports whether the
// packet's descriptors were taken.
func (z *zygote) deliver(packet []byte, fds []int) bool {
	typ, err := messageType(packet, msgpackcheck.Options{MaxDepth: maxFrameDepth})
	if err != nil {
		return false
	}
	switch typ {
	case msgSpawned:
		var m spawnedReport
		if decodeStrict(packet, &m) != nil || len(fds) != 1 {
			return false
		}
		if w := z.waiter(m.ID); w != nil {
			select {
			case w.spawned <- spawnOutcome{pidfd: fds[0]}:
				return true
			default:
			}
		}
	case msgSpawnFailed:
		var m spawnFailedReport
		if decodeStrict(packet, &m) != nil {
			return false
		}
		if w := z.waiter(m.ID); w != nil {
			select {
			case w.spawned <- spawnOutcome{pidfd: -1, err: fmt.Errorf("zygote could not make the sandbox: %s", clip(m.Message, 512))}:
			default:
			}
		}
	case msgExit:
		var m exitReport
		if decodeStrict(packet, &m) != nil {
			return false
		}
		if w := z.waiter(m.ID); w != nil {
			select {
			case w.exit <- m:
			default:
			}
		}
	}
	return false
}

func (z *zygote) waiter(id uint64) *spawnWait {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.pending[id]
}

// errZygoteSpent says a zygote has made its share of sandboxes.
var errZygoteSpent = errors.New("zygote made its share of sandboxes")

// register reserves an id for a new sandbox of this zygote, one of at most
// its share.
func (z *zygote) register() (uint64, *spawnWait, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.closed {
		return 0, nil, fmt.Errorf("zygote is closed: %w", ErrZygoteDied)
	}
	if z.shareOfForks > 0 && z.forks >= z.shareOfForks {
		return 0, nil, errZygoteSpent
	}
	z.nextID++
	z.forks++
	z.live++
	w := &spawnWait{spawned: make(chan spawnOutcome, 1), exit: make(chan exitReport, 1)}
	z.pending[z.nextID] = w
	return z.nextID, w, nil
}

// setShare bounds the sandboxes z makes before it is rotated.
func (z *zygote) setShare(n int) {
	z.mu.Lock()
	z.shareOfForks = n
	z.mu.Unlock()
}

// progress is how many sandboxes z was asked for, of its share.
func (z *zygote) progress() (forks, share int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.forks, z.shareOfForks
}

// release forgets a closed sandbox; a retired zygote closes with its last.
func (z *zygote) release(id uint64) {
	z.mu.Lock()
	delete(z.pending, id)
	z.live--
	last := z.retired && z.live == 0
	z.mu.Unlock()
	if last {
		z.close()
	}
}

// retire stops new spawns; the zygote closes once its sandboxes are gone.
func (z *zygote) retire() {
	z.mu.Lock()
	z.retired = true
	idle := z.live == 0
	z.mu.Unlock()
	if idle {
		z.close()
	}
}

func (z *zygote) forkCount() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.forks
}

func (z *zygote) markGone() { z.goneOnce.Do(func() { close(z.gone) }) }

func (z *zygote) died() bool {
	select {
	case <-z.gone:
		return true
	default:
		return false
	}
}

// close kills the zygote, and with it every sandbox it forked, and waits
// for it and its reader. Safe to call more than once.
func (z *zygote) close() {
	z.mu.Lock()
	already := z.closed
	z.closed = true
	z.mu.Unlock()
	if already {
		return
	}
	z.proc.kill()
	z.proc.wait(drainTimeout)
	z.control.Close()
	<-z.readerEnd
	z.markGone()
	z.stderr.close()
}

// Up a layer (doc.go, "Files"): a Runner method, as jailCommand.
//
// spawn asks z for one sandbox, one of at most its share, and waits until
// it says ready.
func (r *Runner) spawn(ctx context.Context, z *zygote, prewarm bool) (_ *Sandbox, err error) {
	id, wait, err := z.register()
	if err != nil {
		return nil, err
	}
	pipes, err := newSandboxPipes()
	if err != nil {
		z.release(id)
		return nil, err
	}
	sb := newSandbox(pipes, z, id, wait, r.cfg.DenyImports, r.cfg.Limits)
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	request, err := msgpack.Marshal(&spawnRequest{Type: msgSpawn, ID: id, Prewarm: prewarm})
	if err != nil {
		pipes.closeSandboxEnds()
		return nil, fmt.Errorf("cannot encode spawn: %w", err)
	}
	z.writeMu.Lock()
	z.control.SetWriteDeadline(time.Now().Add(r.cfg.StartTimeout))
	_, _, err = z.control.WriteMsgUnix(request, unix.UnixRights(pipes.sandboxEnds()...), nil)
	z.writeMu.Unlock()
	pipes.closeSandboxEnds()
	if err != nil {
		return nil, fmt.Errorf("cannot send spawn to zygote: %w", err)
	}

	deadline := time.Now().Add(r.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// The zygote's own bound; ctx's deadline is ctx.Done's.
	timer := time.NewTimer(r.cfg.StartTimeout)
	defer timer.Stop()
	select {
	case got := <-wait.spawned:
		z.spawnAnswered(true)
		if got.err != nil {
			return nil, got.err
		}
		sb.proc = newPidfdProc(got.pidfd)
		if sb.PID() <= 0 {
			// Never a sandbox the runner cannot read: without its pid
			// there is no memory watch (and no cgroup to move it to).
			return nil, errors.New("cannot read the new sandbox's pid from its pidfd: it ended at once, or /proc cannot be read")
		}
		if r.cfg.Cgroups != nil {
			name, err := randomGroupName()
			if err != nil {
				return nil, err
			}
			if err := sb.joinCgroup(r.cfg.Cgroups, name); err != nil {
				return nil, err
			}
		}
	case <-z.gone:
		return nil, fmt.Errorf("waiting for the sandbox: %w", ErrZygoteDied)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the sandbox: %w", ctx.Err())
	case <-timer.C:
		z.spawnAnswered(false)
		return nil, fmt.Errorf("the zygote did not make the sandbox within %v", r.cfg.StartTimeout)
	}
	if err := sb.awaitReady(ctx, deadline); err != nil {
		if z.died() {
			return nil, fmt.Errorf("%w: %w", ErrZygoteDied, err)
		}
		return nil, err
	}
	if r.cfg.Cgroups == nil {
		// Read while the sandbox waits idle, off the request's path.
		sb.memBase = z.baselines.read(sb.PID(), time.Now())
	}
	return sb, nil
}
