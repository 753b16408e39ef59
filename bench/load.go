package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// loadSpec is one load point: closed loop with Clients, or open loop at
// Rate requests per second (Clients then caps requests in flight).
type loadSpec struct {
	Clients int
	Rate    float64
	Warmup  time.Duration
	// Duration of the measured part; Requests, when set, ends it earlier.
	Duration time.Duration
	Requests int
}

func (l loadSpec) openLoop() bool { return l.Rate > 0 }

// sample is one finished request.
type sample struct {
	latency   time.Duration
	status    int // 0: no HTTP answer
	errorType string
	mismatch  error
}

// target sends requests to one server.
type target struct {
	url    string
	token  string
	client *http.Client
}

func newTarget(url, token string, conns int) *target {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}
	return &target{url: url, token: token, client: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

// answer is the part of a response the harness checks.
type answer struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Type string `json:"type"`
	} `json:"error"`
}

// send runs one script and checks the answer against its expectation.
func (t *target) send(ctx context.Context, sc *script) sample {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url+"/execute", bytes.NewReader(sc.body))
	if err != nil {
		return sample{mismatch: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return sample{mismatch: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return sample{status: resp.StatusCode, mismatch: err}
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return sample{status: resp.StatusCode, mismatch: err}
	}
	s := sample{status: resp.StatusCode}
	if a.Error != nil {
		s.errorType = a.Error.Type
	}
	s.mismatch = sc.verify(resp.StatusCode, s.errorType, a.Result)
	return s
}

// noAnswerBackoff spaces a closed-loop client's requests after one got no
// HTTP answer, so a dead server is not hammered in a tight loop.
const noAnswerBackoff = 10 * time.Millisecond

// schedule is the open loop's timetable: request i is meant to be sent at
// start + i/rate, whether or not earlier requests have finished.
type schedule struct {
	start    time.Time
	interval time.Duration
}

func newSchedule(start time.Time, rate float64) schedule {
	return schedule{start: start, interval: time.Duration(float64(time.Second) / rate)}
}

// at is the intended send time of request i.
func (s schedule) at(i int) time.Time { return s.start.Add(time.Duration(i) * s.interval) }

// window is told when a run's measured part begins (at the end of the
// warm-up) and when it ends (once every measured request has finished).
type window interface {
	begin()
	finish()
}

// run drives the load and returns the measured samples and the measured
// wall time. It calls w (when not nil) at both ends of the measured part. Requests that start during the warm-up are sent but not
// recorded. Open-loop latency runs from the intended send time, so time a
// request spent waiting for a free client counts (no coordinated omission).
func run(ctx context.Context, t *target, sc *scenario, load loadSpec, seed uint64, w window) ([]sample, time.Duration) {
	var mu sync.Mutex
	var samples []sample
	measureFrom := time.Now().Add(load.Warmup)
	deadline := measureFrom.Add(load.Duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Minute))
	defer cancel()
	began := make(chan struct{})
	go func() {
		defer close(began)
		if w == nil {
			return
		}
		if load.Warmup <= 0 {
			w.begin() // before the first request: run waits for began
			return
		}
		timer := time.NewTimer(time.Until(measureFrom))
		defer timer.Stop()
		select {
		case <-timer.C:
			w.begin()
		case <-ctx.Done():
		}
	}()
	if load.Warmup <= 0 {
		<-began
	}
	full := func() bool { return load.Requests > 0 && len(samples) >= load.Requests }
	record := func(intended time.Time, s sample) bool {
		mu.Lock()
		defer mu.Unlock()
		if !intended.Before(measureFrom) && !full() {
			samples = append(samples, s)
		}
		return full()
	}

	var wg sync.WaitGroup
	if !load.openLoop() {
		for c := range load.Clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, uint64(c)))
				for {
					start := time.Now()
					if !start.Before(deadline) {
						return
					}
					s := t.send(ctx, sc.pick(r))
					s.latency = time.Since(start)
					if record(start, s) {
						return
					}
					if s.status == 0 {
						// No answer at all (server gone?): do not spin.
						time.Sleep(noAnswerBackoff)
					}
				}
			}()
		}
		wg.Wait()
	} else {
		sched := newSchedule(time.Now(), load.Rate)
		r := rand.New(rand.NewPCG(seed, 0))
		inflight := make(chan struct{}, max(load.Clients, 1))
	loop:
		for i := 0; ; i++ {
			intended := sched.at(i)
			if !intended.Before(deadline) {
				break
			}
			time.Sleep(time.Until(intended))
			// Waiting for a free client slot delays the send but not the
			// intended time the latency is measured from.
			select {
			case inflight <- struct{}{}:
			case <-ctx.Done():
				break loop
			}
			mu.Lock()
			done := full()
			mu.Unlock()
			if done {
				<-inflight
				break
			}
			wg.Add(1)
			go func(sc *script) {
				defer wg.Done()
				defer func() { <-inflight }()
				s := t.send(ctx, sc)
				s.latency = time.Since(intended)
				record(intended, s)
			}(sc.pick(r))
		}
		wg.Wait()
	}
	elapsed := time.Since(measureFrom)
	<-began
	if w != nil {
		w.finish()
	}
	return samples, elapsed
}
