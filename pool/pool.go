// Package pool keeps a target number of started sandboxes waiting, leases
// one per execution and never takes it back: after its one script a sandbox
// is destroyed, and a replacement is built in the background. It owns
// admission too: how many scripts run at once, how many requests may wait,
// and for how long.
//
// The warm sandboxes live in a github.com/jackc/puddle/v2 pool whose size is
// the warm target. A lease hijacks its sandbox out of puddle at once, which
// frees the slot, so the replacement is built while the script runs rather
// than after. Running sandboxes are bounded separately by MaxBusy.
package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/puddle/v2"
	"github.com/rs/zerolog"

	"github.com/sandbox-exec/pyexec/runner"
)

// Sandbox is what the pool needs of one sandbox.
type Sandbox interface {
	Execute(ctx context.Context, req runner.Request) (runner.Output, error)
	Alive() bool
	Close() error
}

// Factory starts one sandbox. The context bounds the build; it is never a
// request's context, so a client that goes away cannot kill a half-built
// sandbox.
// urgent says the pool is behind demand (requests are waiting, or fewer
// sandboxes are idle than scripts run): the factory may make a plainer one
// faster (fork mode skips its warm-up run).
type Factory func(ctx context.Context, urgent bool) (Sandbox, error)

// Config sets the pool's sizes and bounds. Zero fields take the defaults.
type Config struct {
	// New builds sandboxes. Required.
	New Factory
	// Warm is how many started sandboxes wait for requests. Zero: 4.
	Warm int
	// MaxBusy is how many scripts run at once. Zero: 2 × GOMAXPROCS.
	MaxBusy int
	// MaxWaiting is how many requests may wait for a sandbox before new
	// ones are refused at once with ErrOverloaded. Zero: 64 × MaxBusy.
	MaxWaiting int
	// AcquireTimeout bounds a request's wait for a sandbox. Zero: 10s.
	AcquireTimeout time.Duration
	// BuildTimeout bounds one sandbox build. Zero: 60s.
	BuildTimeout time.Duration
	// BuildConcurrency is how many sandboxes are built at once in the
	// background. Zero: GOMAXPROCS.
	BuildConcurrency int
	// Logger receives build failures. Zero: no logging.
	Logger zerolog.Logger
	// OnBuild, when set, is told how long each build took and whether it
	// failed (for metrics).
	OnBuild func(took time.Duration, err error)
}

// DefaultConfig returns the defaults. MaxBusy, MaxWaiting and
// BuildConcurrency stay zero: New derives them from the CPU count.
func DefaultConfig() Config {
	return Config{Warm: 4, AcquireTimeout: 10 * time.Second, BuildTimeout: 60 * time.Second}
}

// WithDefaults fills every zero or negative field of c: the fixed ones
// from DefaultConfig, MaxBusy, MaxWaiting and BuildConcurrency from
// GOMAXPROCS. Callers that size things after the pool (descriptors,
// memory) ask it here rather than repeat the rule.
func (c Config) WithDefaults() Config {
	procs := runtime.GOMAXPROCS(0)
	d := DefaultConfig()
	if c.Warm <= 0 {
		c.Warm = d.Warm
	}
	if c.MaxBusy <= 0 {
		c.MaxBusy = 2 * procs
	}
	if c.MaxWaiting <= 0 {
		c.MaxWaiting = 64 * c.MaxBusy
	}
	if c.AcquireTimeout <= 0 {
		c.AcquireTimeout = d.AcquireTimeout
	}
	if c.BuildTimeout <= 0 {
		c.BuildTimeout = d.BuildTimeout
	}
	if c.BuildConcurrency <= 0 {
		c.BuildConcurrency = procs
	}
	return c
}

// Validate checks the sizes an operator chose, before WithDefaults: at
// least one warm sandbox, no negative count (zero derives it from the
// CPUs). Its messages name the pyexecd flags, where operators set them.
func (c Config) Validate() error {
	if c.Warm < 1 {
		return fmt.Errorf("--warm must be at least 1 (got %d): every request needs a started sandbox", c.Warm)
	}
	if c.MaxBusy < 0 || c.MaxWaiting < 0 || c.BuildConcurrency < 0 {
		return errors.New("--max-busy, --max-waiting and --build-concurrency must not be negative (0 derives them from the CPUs)")
	}
	return nil
}

// maxLeaseAttempts bounds how many sandboxes one request may find dead
// before it gets the error (each attempt has its own wait bound).
const maxLeaseAttempts = 3

// buildRetryDelay spaces a waiting request's retries after failed builds.
const buildRetryDelay = 50 * time.Millisecond

var (
	// ErrOverloaded means no sandbox could be had within the bounds; the
	// request may succeed if sent again later.
	ErrOverloaded = errors.New("no sandbox available in time")
	// ErrClosed means the pool is shutting down.
	ErrClosed = errors.New("pool is closed")
)

// Pool is the warm pool. Create it with New; stop it with Close.
type Pool struct {
	cfg    Config
	warm   *puddle.Pool[Sandbox]
	busy   chan struct{} // a slot per running script
	refill chan struct{} // wakes the refill loop; buffered, size 1

	waiting  atomic.Int64
	building atomic.Int64
	created  atomic.Int64
	// createdUrgent counts sandboxes built while the pool was behind.
	createdUrgent atomic.Int64
	executed      atomic.Int64
	failures      atomic.Int64 // consecutive build failures; 0 after a success

	mu           sync.Mutex // guards lastBuildErr and closed
	lastBuildErr error
	// closed is set by Close before it waits for leased: no lease is
	// counted after it, so leased.Add never races with leased.Wait.
	closed bool

	ctx    context.Context // cancelled by Close; parent of every build
	cancel context.CancelFunc
	wg     sync.WaitGroup // the refill loop and every background build
	// leased counts sandboxes out of the pool, from their lease until they
	// are closed after their execution: Close waits for them, also for a
	// request the server gave up on at shutdown.
	leased sync.WaitGroup
}

// New starts the pool and its background refill; it returns at once, before
// the first sandbox is ready.
func New(cfg Config) (*Pool, error) {
	if cfg.New == nil {
		return nil, errors.New("pool: no sandbox factory")
	}
	cfg = cfg.WithDefaults()
	p := &Pool{
		cfg:    cfg,
		busy:   make(chan struct{}, cfg.MaxBusy),
		refill: make(chan struct{}, 1),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	warm, err := puddle.NewPool(&puddle.Config[Sandbox]{
		Constructor: p.build,
		Destructor:  func(sb Sandbox) { _ = sb.Close() },
		MaxSize:     int32(cfg.Warm),
	})
	if err != nil {
		return nil, fmt.Errorf("cannot create pool: %w", err)
	}
	p.warm = warm
	p.wg.Add(1)
	go p.refillLoop()
	p.wakeRefill()
	return p, nil
}

// build is puddle's constructor. puddle runs it under a context that keeps
// the caller's values but not its cancellation; the pool's own context and
// BuildTimeout bound it instead.
func (p *Pool) build(context.Context) (Sandbox, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.BuildTimeout)
	defer cancel()
	urgent := p.behindDemand()
	start := time.Now()
	sb, err := p.cfg.New(ctx, urgent)
	if p.cfg.OnBuild != nil {
		p.cfg.OnBuild(time.Since(start), err)
	}
	if err != nil {
		p.failures.Add(1)
		p.mu.Lock()
		p.lastBuildErr = err
		p.mu.Unlock()
		p.cfg.Logger.Error().Err(err).Msg("cannot build sandbox")
		return nil, err
	}
	p.failures.Store(0)
	p.created.Add(1)
	if urgent {
		p.createdUrgent.Add(1)
	}
	return sb, nil
}

// behindDemand says a build should be quick rather than warm: requests are
// waiting, or the idle sandboxes no longer cover the scripts running now
// (sustained load, where the CPU a warm-up run takes is the throughput it
// costs). While the pool is ahead, at light load, builds are warm, so
// requests find a sandbox that has paid its first-run costs.
func (p *Pool) behindDemand() bool {
	if p.waiting.Load() > 0 {
		return true
	}
	running := len(p.busy)
	return running > 0 && int(p.warm.Stat().IdleResources()) < running
}

// Timing is how long Execute spent waiting for a sandbox.
type Timing struct {
	Queue time.Duration
}

// Execute leases a sandbox, runs req in it and destroys it. It waits for a
// sandbox at most AcquireTimeout (or until ctx ends) and returns
// ErrOverloaded when none came. A sandbox found dead before it got the
// script is replaced, since the script never ran. Errors of the script are
// the runner's.
func (p *Pool) Execute(ctx context.Context, req runner.Request) (runner.Output, Timing, error) {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		sb, release, err := p.lease(ctx)
		timing := Timing{Queue: time.Since(start)}
		if err != nil {
			return runner.Output{}, timing, err
		}
		out, err := sb.Execute(ctx, req)
		release()
		if errors.Is(err, runner.ErrSandboxDead) && attempt < maxLeaseAttempts {
			continue
		}
		p.executed.Add(1)
		return out, timing, err
	}
}

// lease admits the request, takes a running slot and a warm sandbox. The
// release func gives the slot back and destroys the sandbox.
func (p *Pool) lease(ctx context.Context) (Sandbox, func(), error) {
	if p.ctx.Err() != nil {
		return nil, nil, ErrClosed
	}
	if p.waiting.Add(1) > int64(p.cfg.MaxWaiting) {
		p.waiting.Add(-1)
		return nil, nil, fmt.Errorf("%d requests already waiting: %w", p.cfg.MaxWaiting, ErrOverloaded)
	}
	// A request waits until it holds a sandbox; the refill it wakes must
	// not count it as waiting any more.
	waiting := true
	defer func() {
		if waiting {
			p.waiting.Add(-1)
		}
	}()

	waitCtx, cancel := context.WithTimeout(ctx, p.cfg.AcquireTimeout)
	defer cancel()
	select {
	case p.busy <- struct{}{}:
	case <-waitCtx.Done():
		return nil, nil, p.waitError(ctx, "a running slot")
	}
	for {
		res, err := p.warm.Acquire(waitCtx)
		if err != nil {
			if errors.Is(err, puddle.ErrClosedPool) {
				<-p.busy
				return nil, nil, ErrClosed
			}
			if waitCtx.Err() != nil {
				<-p.busy
				return nil, nil, p.waitError(ctx, "a warm sandbox")
			}
			// puddle built a sandbox for this request and the build failed
			// (say, the zygote is restarting): wait within the bound for
			// the next one rather than fail the request.
			select {
			case <-time.After(buildRetryDelay):
			case <-waitCtx.Done():
			}
			continue
		}
		// The sandbox leaves puddle now: it will never come back, and its
		// slot is refilled while the script runs.
		sb := res.Value()
		res.Hijack()
		p.waiting.Add(-1)
		waiting = false
		p.wakeRefill()
		if !sb.Alive() {
			_ = sb.Close()
			p.waiting.Add(1)
			waiting = true
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = sb.Close()
			<-p.busy
			return nil, nil, ErrClosed
		}
		p.leased.Add(1)
		p.mu.Unlock()
		// Reaping happens off the request path; the running slot is
		// given back once the sandbox is gone, so MaxBusy bounds live
		// sandbox processes, not only running scripts.
		release := func() {
			go func() {
				defer p.leased.Done()
				_ = sb.Close()
				<-p.busy
			}()
		}
		return sb, release, nil
	}
}

// waitError tells a caller that went away from a pool that had nothing.
func (p *Pool) waitError(ctx context.Context, what string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("gave up waiting for %s: %w", what, ctx.Err())
	}
	return fmt.Errorf("waited %v for %s: %w", p.cfg.AcquireTimeout, what, ErrOverloaded)
}

func (p *Pool) wakeRefill() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// refillLoop keeps idle + building at the warm target. After build failures
// it backs off (up to 5s) so a broken jail does not spin the CPU.
func (p *Pool) refillLoop() {
	defer p.wg.Done()
	slots := make(chan struct{}, p.cfg.BuildConcurrency)
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.refill:
		case <-retry.C:
		}
		for p.ctx.Err() == nil {
			stat := p.warm.Stat()
			if int(stat.IdleResources())+int(p.building.Load()) >= p.cfg.Warm ||
				int(stat.TotalResources()) >= p.cfg.Warm {
				break
			}
			select {
			case slots <- struct{}{}:
			case <-p.ctx.Done():
				return
			}
			p.building.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer func() { <-slots; p.building.Add(-1); p.wakeRefill() }()
				// CreateResource fails when puddle is full (a lease's own
				// build filled the slot) or the build failed; both are
				// retried by the loop, failures after a back-off.
				_ = p.warm.CreateResource(p.ctx)
			}()
		}
		if n := p.failures.Load(); n > 0 {
			retry.Reset(min(time.Duration(n)*100*time.Millisecond, 5*time.Second))
		}
	}
}

// Stats is a snapshot of the pool for /health and /metrics.
type Stats struct {
	Warm, Idle, Building, Busy, Waiting int
	MaxBusy                             int
	Created, Executed                   int64
	// CreatedUrgent were built while the pool was behind demand (fork
	// mode: without the warm-up run).
	CreatedUrgent            int64
	ConsecutiveBuildFailures int64
	LastBuildError           string
}

// Stats returns the current figures.
func (p *Pool) Stats() Stats {
	stat := p.warm.Stat()
	s := Stats{
		Warm:                     p.cfg.Warm,
		Idle:                     int(stat.IdleResources()),
		Building:                 int(stat.ConstructingResources()),
		Busy:                     len(p.busy),
		Waiting:                  int(p.waiting.Load()),
		MaxBusy:                  p.cfg.MaxBusy,
		Created:                  p.created.Load(),
		CreatedUrgent:            p.createdUrgent.Load(),
		Executed:                 p.executed.Load(),
		ConsecutiveBuildFailures: p.failures.Load(),
	}
	p.mu.Lock()
	if p.lastBuildErr != nil {
		s.LastBuildError = p.lastBuildErr.Error()
	}
	p.mu.Unlock()
	return s
}

// Ready reports whether a request can be served now or very soon: a warm
// sandbox is waiting, or one is being built and builds are succeeding.
func (p *Pool) Ready() bool {
	if p.ctx.Err() != nil {
		return false
	}
	s := p.Stats()
	return s.Idle > 0 || (s.Building > 0 && s.ConsecutiveBuildFailures == 0)
}

// Close stops the refill, waits for builds in flight, destroys every warm
// sandbox and waits until every leased one is reaped, including those of
// requests still running (the server cancels them at the end of its
// shutdown grace, which kills their sandboxes). A lease asked for after
// Close began gets ErrClosed.
func (p *Pool) Close() {
	p.cancel()
	p.wg.Wait()
	p.warm.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.leased.Wait()
}
