package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// zygoteSupervisor keeps one zygote serving in fork mode: it restarts a
// dead one at once (backing off while starts fail), and rotates a zygote
// after its share of sandboxes (Config.ZygoteMaxForks) or
// Config.ZygoteMaxAge, so that sandboxes of different generations differ in
// address-space layout and hash seed. A rotated zygote is retired: it makes
// no more sandboxes and is closed when its last one is. It is owned by the
// Runner.
//
// A zygote takes a few hundred milliseconds of CPU to start (numpy and
// pandas imported), longer than the warm pool lasts under load: started
// only once the serving one is spent, every request in between waited for
// it (hello at 50 requests/s: p99 325 ms). So the successor starts when
// the serving zygote has three quarters of Config.ZygoteMaxForks left to
// make (at once for a first zygote with a smaller share), and takes over
// at once when that one is spent. Three quarters: under full load a start
// took 1.2-1.6 s here while a zygote made about 80 sandboxes a second, so
// 100 left was too late, and 150 are not.
//
// The first zygote of each supervisor has a share cut by its place among
// the runner's zygotes, so that zygotes serving in turn rotate, and start
// their successors, at different times rather than all at once; so does
// the first after a rotation by age or a restart, which start each
// supervisor's count afresh whatever the others' (at light load every
// zygote ages out about together).
type zygoteSupervisor struct {
	// Up a layer (doc.go, "Files"): zygotes start through the Runner (its
	// Config, credential and program), and restarts are counted on it.
	r *Runner
	// firstShare is the share of sandboxes of this supervisor's first
	// zygote, and of the first after a rotation by age or a restart;
	// every other makes Config.ZygoteMaxForks.
	firstShare int

	mu      sync.Mutex // guards current, changed, lastErr, and the writes below
	current *zygote
	changed chan struct{} // closed and replaced whenever current changes
	lastErr error
	// Written by the loop alone, under mu (so the loop reads them without
	// it, and counts with it): current's successor once started, and its
	// start while it runs.
	successor *zygote
	starting  <-chan startResult
	// prepare is signalled when current has three quarters of
	// Config.ZygoteMaxForks left to make: its successor starts.
	prepare chan struct{}
	// rotate is signalled when current has made its share of sandboxes.
	rotate chan struct{}
	// retired are the rotated zygotes, closed at the latest with the runner.
	retired []*zygote

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// newZygoteSupervisor starts the supervisor at place index of count
// serving in turn.
func newZygoteSupervisor(r *Runner, index, count int) *zygoteSupervisor {
	s := &zygoteSupervisor{
		r: r, firstShare: firstShare(r.cfg.ZygoteMaxForks, index, count),
		changed: make(chan struct{}), prepare: make(chan struct{}, 1), rotate: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.loop()
	return s
}

// firstShare is the share of the first zygote at place index of count
// serving in turn: (index+1)/count of share, at least one sandbox, so that
// their rotations fall share/count sandboxes apart.
func firstShare(share, index, count int) int {
	return max(1, share*(index+1)/count)
}

func (s *zygoteSupervisor) set(z *zygote, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current, s.lastErr = z, err
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *zygoteSupervisor) start() *zygote {
	backoff := 100 * time.Millisecond
	for s.ctx.Err() == nil {
		z, err := s.startOnce()
		if err == nil {
			return z
		}
		if s.ctx.Err() != nil {
			return nil // the runner is closing: no failure of the zygote's
		}
		// Waiters see the failure at once: a probe gives up on it.
		s.mu.Lock()
		s.lastErr = err
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
		s.r.cfg.Logger.Error().Err(err).Dur("retry_in", backoff).Msg("cannot start zygote")
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// startOnce starts one zygote, saying how long it took.
func (s *zygoteSupervisor) startOnce() (*zygote, error) {
	began := time.Now()
	z, err := s.r.startZygote(s.ctx)
	if err == nil {
		s.r.cfg.Logger.Debug().Dur("took", time.Since(began)).Msg("zygote started")
	}
	return z, err
}

// successorRetry is the first wait after a successor failed to start or
// died before it served; it doubles up to 5 s.
const successorRetry = 100 * time.Millisecond

// startResult is what a successor's start gave.
type startResult struct {
	z   *zygote
	err error
}

func (s *zygoteSupervisor) loop() {
	defer close(s.done)
	var (
		z       *zygote   // serving; its successor is s.successor
		retryAt time.Time // no successor start before this
		backoff = successorRetry
	)
	age := time.NewTimer(s.r.cfg.ZygoteMaxAge)
	defer func() {
		age.Stop()
		next := s.takeSuccessor() // waits for a start in flight
		s.mu.Lock()
		left := append([]*zygote{z, next}, s.retired...)
		s.mu.Unlock()
		for _, zz := range left {
			if zz != nil {
				zz.close()
			}
		}
	}()
	failedSuccessor := func() {
		retryAt = time.Now().Add(backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
	for s.ctx.Err() == nil {
		if z == nil {
			if z = s.takeSuccessor(); z == nil || z.died() {
				if z != nil {
					z.close()
				}
				if z = s.start(); z == nil {
					return
				}
			}
			s.serve(z, s.firstShare, age)
		}
		var prepare <-chan struct{}
		var nextGone <-chan struct{}
		if s.successor == nil && s.starting == nil {
			prepare = s.prepare
		}
		if s.successor != nil {
			nextGone = s.successor.gone
		}
		select {
		case <-z.gone:
			// Sandboxes it forked died with it; they see z.gone at once.
			s.r.zygoteRestarts.Add(1)
			died := fmt.Errorf("%w (%s)", ErrZygoteDied, stderrTail(z.stderr))
			s.set(nil, died)
			z.close() // reaps the jail: its wait status is known after this
			s.r.cfg.Logger.Error().Err(died).Str("jail", z.proc.exitString()).Msg("zygote died; restarting it")
			z = nil
		case <-nextGone:
			// It made no sandbox: started again at a later signal.
			s.r.zygoteRestarts.Add(1)
			s.r.cfg.Logger.Error().Str("stderr", stderrTail(s.successor.stderr)).Msg("a zygote died before it served")
			s.successor.close()
			s.setSuccessor(nil, nil)
			failedSuccessor()
		case <-prepare:
			if due, _ := s.due(z.progress()); due && !time.Now().Before(retryAt) {
				s.setSuccessor(nil, s.startSuccessor())
			}
		case res := <-s.starting:
			s.setSuccessor(res.z, nil)
			if res.err != nil {
				if s.ctx.Err() == nil {
					s.r.cfg.Logger.Error().Err(res.err).Dur("retry_in", backoff).Msg("cannot start a successor zygote")
				}
				failedSuccessor()
				break
			}
			backoff = successorRetry
		case <-s.rotate:
			if _, spent := s.due(z.progress()); spent {
				z = s.replace(z, "forks", s.r.cfg.ZygoteMaxForks, age)
			}
		case <-age.C:
			z = s.replace(z, "age", s.firstShare, age)
		case <-s.ctx.Done():
		}
	}
}

// due says what a zygote's progress calls for: its successor's start
// (three quarters of Config.ZygoteMaxForks left to make), and its
// rotation (its share made, counting the one being asked for). get()
// signals both; the loop checks again, as a signal may be meant for the
// zygote before.
func (s *zygoteSupervisor) due(forks, share int) (prepare, rotate bool) {
	return forks+1 >= share-s.r.cfg.ZygoteMaxForks*3/4, forks+1 >= share
}

// startSuccessor starts a zygote in a goroutine of its own, so that the
// loop keeps watching the serving one meanwhile. The loop owns it: it
// receives the one result (the channel is buffered), also when it stops.
func (s *zygoteSupervisor) startSuccessor() <-chan startResult {
	result := make(chan startResult, 1)
	go func() {
		z, err := s.startOnce()
		result <- startResult{z, err}
	}()
	return result
}

// setSuccessor records the loop's successor and its start in flight.
func (s *zygoteSupervisor) setSuccessor(z *zygote, starting <-chan startResult) {
	s.mu.Lock()
	s.successor, s.starting = z, starting
	s.mu.Unlock()
}

// takeSuccessor takes the successor away from the loop's state: the one
// started, or the one starting, waited for; nil when there is none or
// its start failed.
func (s *zygoteSupervisor) takeSuccessor() *zygote {
	next := s.successor
	if s.starting != nil {
		if res := <-s.starting; res.err == nil {
			next = res.z
		}
	}
	s.setSuccessor(nil, nil)
	return next
}

// serve makes z the serving zygote, with share sandboxes to make and its
// age counted from now; z was taken as the successor first, if it was
// one. Signals that came for the one before are stale.
func (s *zygoteSupervisor) serve(z *zygote, share int, age *time.Timer) {
	z.setShare(share)
	s.set(z, nil)
	age.Reset(s.r.cfg.ZygoteMaxAge)
	for _, stale := range []chan struct{}{s.prepare, s.rotate} {
		select {
		case <-stale:
		default:
		}
	}
}

// replace retires old for its successor (the one started, or the one
// starting, waited for, or one started now), which serves with share
// sandboxes to make; it returns the zygote that serves: old if no start
// succeeded (the runner is closing).
func (s *zygoteSupervisor) replace(old *zygote, why string, share int, age *time.Timer) *zygote {
	next := s.takeSuccessor()
	if next != nil && next.died() {
		s.r.zygoteRestarts.Add(1)
		next.close()
		next = nil
	}
	if next == nil {
		if next = s.start(); next == nil {
			return old
		}
	}
	s.serve(next, share, age)
	s.r.cfg.Logger.Debug().Str("why", why).Int("forks", old.forkCount()).Msg("zygote rotated")
	old.retire()
	s.mu.Lock()
	s.retired = append(liveZygotes(s.retired), old)
	s.mu.Unlock()
	return next
}

// counts says how many zygotes this supervisor holds: serving (0 or 1),
// its successor starting or started ahead (0 or 1 each), and rotated but
// still alive for sandboxes they made.
func (s *zygoteSupervisor) counts() (serving, starting, successor, retiring int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		serving = 1
	}
	if s.starting != nil {
		starting = 1
	}
	if s.successor != nil {
		successor = 1
	}
	return serving, starting, successor, len(liveZygotes(s.retired))
}

// liveZygotes are those of zs not yet closed.
func liveZygotes(zs []*zygote) []*zygote {
	var out []*zygote
	for _, z := range zs {
		z.mu.Lock()
		closed := z.closed
		z.mu.Unlock()
		if !closed {
			out = append(out, z)
		}
	}
	return out
}

// get returns the serving zygote, waiting for one until ctx ends. With
// failFast it returns the last start's error as soon as a start failed
// and no zygote serves, instead of waiting for the next attempt.
func (s *zygoteSupervisor) get(ctx context.Context, failFast bool) (*zygote, error) {
	for {
		s.mu.Lock()
		z, changed, lastErr := s.current, s.changed, s.lastErr
		s.mu.Unlock()
		if z == nil && lastErr != nil && failFast {
			return nil, fmt.Errorf("cannot start the zygote: %w", lastErr)
		}
		if z != nil {
			forks, share := z.progress()
			prepare, rotate := s.due(forks, share)
			if prepare {
				signal(s.prepare)
			}
			if rotate {
				signal(s.rotate)
			}
			// A zygote that made its share makes no more: wait for the
			// next one (started well ahead, it is most often ready).
			if forks < share {
				return z, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("no zygote: %w (last start: %v)", ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("no zygote yet: %w", ctx.Err())
		case <-s.ctx.Done():
			return nil, errors.New("runner is closed")
		}
	}
}

// signal wakes the loop on c unless a wake is pending already.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *zygoteSupervisor) close() {
	s.cancel()
	<-s.done
}
