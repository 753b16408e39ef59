package server

import (
	"cmp"
	"fmt"
	"net/http"

	"github.com/valyala/fasthttp"

	"github.com/sandbox-exec/pyexec/pool"
)

// healthBody keeps the original service's fields and adds the jail, mode,
// pool figures and version.
type healthBody struct {
	Status   string   `json:"status"`
	Service  string   `json:"service"`
	Security string   `json:"security"`
	Features []string `json:"features"`
	Jail     string   `json:"jail"`
	Mode     string   `json:"mode"`
	Version  string   `json:"version"`
	// Policy is the validation policy in force (seed, none, or a file's).
	Policy string `json:"policy"`
	// NotReady lists why /ready would answer 503 (empty when ready).
	NotReady []string `json:"not_ready"`
	// MemoryAccounting says what bounds a sandbox's memory: "rlimit"
	// (address space per process, times processes, plus the scratch
	// tmpfs; see docs/security.md). Per-sandbox cgroup v2 accounting is not built.
	MemoryAccounting string     `json:"memory_accounting"`
	Pool             poolHealth `json:"pool"`
	// Runtimes lists the runtimes a request may name, the default first.
	Runtimes []runtimeHealth `json:"runtimes"`
}

type runtimeHealth struct {
	Runtime
	Default bool `json:"default"`
}

type poolHealth struct {
	Warm                     int    `json:"warm"`
	Idle                     int    `json:"idle"`
	Building                 int    `json:"building"`
	Busy                     int    `json:"busy"`
	MaxBusy                  int    `json:"max_busy"`
	Waiting                  int    `json:"waiting"`
	Created                  int64  `json:"created"`
	CreatedUrgent            int64  `json:"created_urgent"`
	Executed                 int64  `json:"executed"`
	ConsecutiveBuildFailures int64  `json:"consecutive_build_failures"`
	LastBuildError           string `json:"last_build_error,omitempty"`
}

// readiness says whether this replica can take work soon, and why not:
// no sandbox can be served (zygote down, builds failing), or it is
// saturated: every running slot busy and at least as many requests again
// waiting.
func readiness(st pool.Stats, canServe bool) []string {
	var reasons []string
	if !canServe {
		reasons = append(reasons, "no sandbox can be served: none is warm and builds are failing or not started")
	}
	if st.ConsecutiveBuildFailures >= 3 {
		reasons = append(reasons, fmt.Sprintf("%d sandbox builds failed in a row", st.ConsecutiveBuildFailures))
	}
	if st.MaxBusy > 0 && st.Busy >= st.MaxBusy && st.Waiting >= st.MaxBusy {
		reasons = append(reasons, fmt.Sprintf("saturated: %d of %d slots busy and %d requests waiting", st.Busy, st.MaxBusy, st.Waiting))
	}
	return reasons
}

// handleReady answers 200 while the replica can take work soon, else 503
// with the reasons: what a load balancer's readiness probe asks.
func (s *Server) handleReady(ctx *fasthttp.RequestCtx) {
	reasons := readiness(s.exec.Stats(), s.exec.Ready())
	body, _ := marshalJSON(map[string]any{"ready": len(reasons) == 0, "reasons": append([]string{}, reasons...)})
	ctx.SetContentType("application/json")
	if len(reasons) > 0 {
		ctx.SetStatusCode(http.StatusServiceUnavailable)
	}
	ctx.SetBody(body)
}

func (s *Server) handleHealth(ctx *fasthttp.RequestCtx) {
	st := s.exec.Stats()
	body := healthBody{
		Status:  "healthy",
		Service: "Safe Python Execution Service (warm sandbox pool)",
		Security: fmt.Sprintf("%s jail: user, mount, pid, ipc, uts and network namespaces per sandbox, private read-only /dev and capped scratch tmpfs, unprivileged uid, seccomp allow list, rlimits; mode %s",
			s.cfg.Jail, s.cfg.Mode),
		Features: []string{"resource limits", "sandboxed execution", "warm sandbox pool",
			"one sandbox per execution", s.cfg.Jail + " sandboxing", "numpy", "pandas"},
		Jail:             s.cfg.Jail,
		Mode:             s.cfg.Mode,
		Version:          s.cfg.Version,
		MemoryAccounting: cmp.Or(s.cfg.MemoryAccounting, "rlimit"),
		Policy:           s.cfg.Policy,
		NotReady:         append([]string{}, readiness(st, s.exec.Ready())...),
		Pool: poolHealth{
			Warm: st.Warm, Idle: st.Idle, Building: st.Building, Busy: st.Busy, MaxBusy: st.MaxBusy,
			Waiting: st.Waiting, Created: st.Created, CreatedUrgent: st.CreatedUrgent, Executed: st.Executed,
			ConsecutiveBuildFailures: st.ConsecutiveBuildFailures, LastBuildError: st.LastBuildError,
		},
	}
	for i, rt := range s.cfg.Runtimes {
		body.Runtimes = append(body.Runtimes, runtimeHealth{Runtime: rt, Default: i == 0})
	}
	if s.cfg.PolicyRefuses {
		body.Features = append(body.Features, "dangerous import blocking")
	}
	status := http.StatusOK
	if !s.exec.Ready() {
		body.Status = "unavailable"
		status = http.StatusServiceUnavailable
	}
	encoded, err := marshalJSON(&body)
	if err != nil {
		s.writeError(ctx, fmt.Errorf("cannot encode health: %w", err), nil)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(encoded)
}
