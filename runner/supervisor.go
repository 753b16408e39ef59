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
// after Config.ZygoteMaxForks sandboxes or Config.ZygoteMaxAge, so that
// sandboxes of different generations differ in address-space layout and
// hash seed. A rotated zygote is retired: it makes no more sandboxes and
// is closed when its last one is. It is owned by the Runner.
type zygoteSupervisor struct {
	// Up a layer (doc.go, "Files"): zygotes start through the Runner (its
	// Config, credential and program), and restarts are counted on it.
	r *Runner

	mu      sync.Mutex // guards current, changed and lastErr
	current *zygote
	changed chan struct{} // closed and replaced whenever current changes
	lastErr error
	// rotate is signalled when current has made its share of sandboxes.
	rotate chan struct{}
	// retired are the rotated zygotes, closed at the latest with the runner.
	retired []*zygote

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newZygoteSupervisor(r *Runner) *zygoteSupervisor {
	s := &zygoteSupervisor{r: r, changed: make(chan struct{}), rotate: make(chan struct{}, 1), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.loop()
	return s
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
		z, err := s.r.startZygote(s.ctx)
		if err == nil {
			return z
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

func (s *zygoteSupervisor) loop() {
	defer close(s.done)
	var z *zygote
	for s.ctx.Err() == nil {
		if z == nil {
			if z = s.start(); z == nil {
				return
			}
			s.set(z, nil)
		}
		age := time.NewTimer(s.r.cfg.ZygoteMaxAge)
		select {
		case <-z.gone:
			// Sandboxes it forked died with it; they see z.gone at once.
			s.r.zygoteRestarts.Add(1)
			died := fmt.Errorf("%w (%s)", ErrZygoteDied, stderrTail(z.stderr))
			s.set(nil, died)
			z.close() // reaps the jail: its wait status is known after this
			s.r.cfg.Logger.Error().Err(died).Str("jail", z.proc.exitString()).Msg("zygote died; restarting it")
			z = nil
		case <-s.rotate:
			z = s.replace(z, "forks")
		case <-age.C:
			z = s.replace(z, "age")
		case <-s.ctx.Done():
		}
		age.Stop()
	}
	if z != nil {
		z.close()
	}
	for _, old := range s.retired {
		old.close()
	}
}

// replace starts the next zygote while old keeps serving, then retires old.
func (s *zygoteSupervisor) replace(old *zygote, why string) *zygote {
	next := s.start()
	if next == nil {
		return old
	}
	s.set(next, nil)
	s.r.cfg.Logger.Debug().Str("why", why).Int("forks", old.forkCount()).Msg("zygote rotated")
	old.retire()
	s.retired = append(s.retired[:0:0], liveZygotes(s.retired)...)
	s.retired = append(s.retired, old)
	// A rotation request for old that came while next was starting is stale.
	select {
	case <-s.rotate:
	default:
	}
	return next
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
			forks := z.forkCount()
			if forks+1 >= s.r.cfg.ZygoteMaxForks {
				select {
				case s.rotate <- struct{}{}:
				default:
				}
			}
			// A zygote that made its share makes no more: wait for the
			// next one (the warm pool covers the wait).
			if forks < s.r.cfg.ZygoteMaxForks {
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

func (s *zygoteSupervisor) close() {
	s.cancel()
	<-s.done
}
