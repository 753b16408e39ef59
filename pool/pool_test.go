package pool

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandbox-exec/pyexec/runner"
)

// fakeSandbox stands in for a runner.Sandbox in unit tests of the pool.
type fakeSandbox struct {
	executed atomic.Bool
	closed   atomic.Bool
	dead     atomic.Bool
	run      func(ctx context.Context) error
}

var _ Sandbox = (*fakeSandbox)(nil)

func (f *fakeSandbox) Execute(ctx context.Context, req runner.Request) (runner.Output, error) {
	if f.executed.Swap(true) {
		return runner.Output{}, runner.ErrSandboxUsed
	}
	if f.run != nil {
		return runner.Output{}, f.run(ctx)
	}
	return runner.Output{Result: []byte("1")}, nil
}
func (f *fakeSandbox) Alive() bool  { return !f.dead.Load() && !f.closed.Load() }
func (f *fakeSandbox) Close() error { f.closed.Store(true); return nil }

// fakeFactory records every sandbox it built.
type fakeFactory struct {
	mu    sync.Mutex
	built []*fakeSandbox
	hook  func(ctx context.Context) error // runs before each build
	run   func(ctx context.Context) error
	// urgent counts builds asked for while requests waited.
	urgent atomic.Int64
}

func (f *fakeFactory) New(ctx context.Context, urgent bool) (Sandbox, error) {
	if urgent {
		f.urgent.Add(1)
	}
	if f.hook != nil {
		if err := f.hook(ctx); err != nil {
			return nil, err
		}
	}
	sb := &fakeSandbox{run: f.run}
	f.mu.Lock()
	f.built = append(f.built, sb)
	f.mu.Unlock()
	return sb, nil
}

func (f *fakeFactory) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.built)
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkNoLeak fails if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		eventually(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	})
}

func newTestPool(t *testing.T, f *fakeFactory, cfg Config) *Pool {
	t.Helper()
	cfg.New = f.New
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestPoolWarmsUpAndNeverReuses(t *testing.T) {
	checkNoLeak(t)
	f := &fakeFactory{}
	p := newTestPool(t, f, Config{Warm: 3})
	eventually(t, "3 idle", func() bool { return p.Stats().Idle == 3 })

	for range 10 {
		if _, _, err := p.Execute(context.Background(), runner.Request{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "refill to 3 idle", func() bool { return p.Stats().Idle == 3 && p.Stats().Busy == 0 })
	if got := f.count(); got != 13 {
		t.Errorf("built %d sandboxes for 10 executions and 3 warm, want 13", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	used := 0
	for _, sb := range f.built {
		if sb.executed.Load() {
			used++
			if !sb.closed.Load() {
				t.Error("a used sandbox was not closed")
			}
		}
	}
	if used != 10 {
		t.Errorf("%d sandboxes executed, want 10 (one each)", used)
	}
}

func TestCancelledRequestDoesNotKillABuild(t *testing.T) {
	checkNoLeak(t)
	release := make(chan struct{})
	var buildCtxErr atomic.Value
	f := &fakeFactory{hook: func(ctx context.Context) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			buildCtxErr.Store(ctx.Err())
		}
		return ctx.Err()
	}}
	p := newTestPool(t, f, Config{Warm: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := p.Execute(ctx, runner.Request{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Execute with an expiring context: %v", err)
	}
	close(release)
	eventually(t, "the build to finish", func() bool { return p.Stats().Idle == 1 })
	if err := buildCtxErr.Load(); err != nil {
		t.Errorf("the build's context was cancelled: %v", err)
	}
}

func TestOverloadWhenNothingFreesUp(t *testing.T) {
	checkNoLeak(t)
	block := make(chan struct{})
	f := &fakeFactory{run: func(ctx context.Context) error { <-block; return nil }}
	p := newTestPool(t, f, Config{Warm: 1, MaxBusy: 1, MaxWaiting: 1, AcquireTimeout: 50 * time.Millisecond})
	eventually(t, "1 idle", func() bool { return p.Stats().Idle == 1 })

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.Execute(context.Background(), runner.Request{})
	}()
	eventually(t, "one busy", func() bool { return p.Stats().Busy == 1 })

	// One waiter is allowed, and times out; with it waiting, a second is
	// refused at once.
	waiterDone := make(chan error, 1)
	go func() {
		_, _, err := p.Execute(context.Background(), runner.Request{})
		waiterDone <- err
	}()
	eventually(t, "one waiting", func() bool { return p.Stats().Waiting == 1 })
	if _, _, err := p.Execute(context.Background(), runner.Request{}); !errors.Is(err, ErrOverloaded) {
		t.Errorf("second waiter: %v, want ErrOverloaded", err)
	}
	if err := <-waiterDone; !errors.Is(err, ErrOverloaded) {
		t.Errorf("timed-out waiter: %v, want ErrOverloaded", err)
	}
	close(block)
	wg.Wait()
}

func TestDeadIdleSandboxIsSkipped(t *testing.T) {
	checkNoLeak(t)
	f := &fakeFactory{}
	p := newTestPool(t, f, Config{Warm: 2})
	eventually(t, "2 idle", func() bool { return p.Stats().Idle == 2 })
	f.mu.Lock()
	for _, sb := range f.built {
		sb.dead.Store(true)
	}
	f.mu.Unlock()
	if _, _, err := p.Execute(context.Background(), runner.Request{}); err != nil {
		t.Fatalf("Execute with dead idle sandboxes: %v", err)
	}
}

func TestBuildFailuresBackOffAndRecover(t *testing.T) {
	checkNoLeak(t)
	var calls atomic.Int32
	f := &fakeFactory{hook: func(ctx context.Context) error {
		if calls.Add(1) <= 3 {
			return errors.New("jail broke")
		}
		return nil
	}}
	p := newTestPool(t, f, Config{Warm: 1, BuildConcurrency: 1})
	eventually(t, "recovery", func() bool { return p.Stats().Idle == 1 })
	if !p.Ready() {
		t.Error("pool with an idle sandbox is not ready")
	}
	if st := p.Stats(); st.ConsecutiveBuildFailures != 0 || st.LastBuildError != "jail broke" {
		t.Errorf("stats %+v", st)
	}
}

func TestClosedPoolRefuses(t *testing.T) {
	checkNoLeak(t)
	f := &fakeFactory{}
	p, err := New(Config{New: f.New, Warm: 1})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, _, err := p.Execute(context.Background(), runner.Request{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after Close: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sb := range f.built {
		if !sb.closed.Load() {
			t.Error("a warm sandbox survived Close")
		}
	}
}

// TestBuildsWhileRequestsWaitAreUrgent: a build that starts while a request
// waits is asked to be quick (fork mode then skips the warm-up run), and
// Stats counts it.
func TestBuildsWhileRequestsWaitAreUrgent(t *testing.T) {
	var calls atomic.Int64
	f := &fakeFactory{hook: func(ctx context.Context) error {
		if calls.Add(1) <= 2 {
			return errors.New("not yet")
		}
		return nil
	}}
	p := newTestPool(t, f, Config{Warm: 1, AcquireTimeout: 10 * time.Second})
	if _, _, err := p.Execute(context.Background(), runner.Request{Script: "x"}); err != nil {
		t.Fatal(err)
	}
	if f.urgent.Load() == 0 || p.Stats().CreatedUrgent == 0 {
		t.Errorf("no build was urgent (factory saw %d, stats %d) though a request waited through two failed builds",
			f.urgent.Load(), p.Stats().CreatedUrgent)
	}
}

// TestBuildsUnderSustainedLoadAreUrgent: while scripts run and fewer
// sandboxes are idle than scripts run, builds are quick (no warm-up run,
// whose CPU is throughput under load); while the pool is ahead, they are
// warm.
func TestBuildsUnderSustainedLoadAreUrgent(t *testing.T) {
	release := make(chan struct{})
	f := &fakeFactory{run: func(ctx context.Context) error { <-release; return nil }}
	p := newTestPool(t, f, Config{Warm: 3, MaxBusy: 4, AcquireTimeout: 10 * time.Second})
	eventually(t, "3 idle", func() bool { return p.Stats().Idle == 3 })
	if f.urgent.Load() != 0 {
		t.Fatalf("%d builds at start were urgent, want warm ones", f.urgent.Load())
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Execute(context.Background(), runner.Request{})
		}()
	}
	// The three take the three idle sandboxes, so none waits: the refills
	// are urgent because the pool is behind the running scripts. Three
	// refills built show the three took theirs: Busy counts a request
	// from its running slot on, before it holds a sandbox, and Idle is
	// also 3 before any took one.
	eventually(t, "3 running", func() bool { return p.Stats().Busy == 3 })
	eventually(t, "the refills", func() bool { return f.count() == 6 && p.Stats().Idle == 3 })
	if p.Stats().Waiting != 0 || f.urgent.Load() == 0 {
		t.Errorf("%d urgent builds (%d waiting) while 3 scripts ran with fewer idle sandboxes", f.urgent.Load(), p.Stats().Waiting)
	}
	close(release)
	wg.Wait()
}
