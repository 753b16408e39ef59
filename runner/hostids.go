package runner

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The kernel keeps a few counters per host user, whatever namespaces a
// process is in: descriptors in flight over unix sockets (checked against
// the sender's RLIMIT_NOFILE) and the pages of pipe buffers
// (pipe-user-pages-soft). While every sandbox ran as one host uid, one
// sandbox could use them up for all: 64 descriptors left in flight made
// every other sandbox's SCM_RIGHTS fail with "Too many references" (issue
// 25). With an IDRange, each sandbox runs as a host uid and gid of its own.
//
// How: the runner (root) writes the jail's user-namespace maps itself
// (bwrap's --userns-block-fd), mapping a slice of the range besides the
// jail's own uid; the zygote keeps CAP_SETUID and CAP_SETGID in the jail's
// namespace and writes each new sandbox's one-line map to an id of its
// slice that no live sandbox of it holds; the sandbox then switches to it
// (python/pyexec/isolation.py, "take_own_ids").

// IDRange is a range of host ids, used as both uids and gids, that no
// other user or group of the host holds: sandboxes take their host ids
// from it.
type IDRange struct {
	First, Count uint32
}

// idSliceSize is how many ids one zygote gets: more than the sandboxes it
// can have alive at once (the warm pool, the busy ones and those being
// reaped), so that an id is handed out again only after the others.
const idSliceSize = 256

// DefaultSandboxIDs is the range a root server takes sandbox ids from
// unless told otherwise: above the ranges systemd hands to containers
// (524288-1879048191) and below its foreign range (from 2147352576).
var DefaultSandboxIDs = IDRange{First: 1_900_000_000, Count: 65536}

// ParseIDRange reads "FIRST:COUNT"; "off" (or "") is the empty range.
func ParseIDRange(s string) (IDRange, error) {
	if s == "" || s == "off" {
		return IDRange{}, nil
	}
	first, count, ok := strings.Cut(s, ":")
	f, err1 := strconv.ParseUint(first, 10, 32)
	c, err2 := strconv.ParseUint(count, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return IDRange{}, fmt.Errorf("sandbox id range %q: want FIRST:COUNT (or off)", s)
	}
	return IDRange{First: uint32(f), Count: uint32(c)}, nil
}

func (r IDRange) String() string {
	if r.Count == 0 {
		return "off"
	}
	return fmt.Sprintf("%d:%d", r.First, r.Count)
}

// Contains says whether id is in r.
func (r IDRange) Contains(id uint32) bool {
	return id >= r.First && uint64(id) < uint64(r.First)+uint64(r.Count)
}

// Validate checks that r is empty, or holds at least one zygote's slice,
// fits in 32 bits and holds neither 0 nor any of reserved (the jail's own
// ids).
func (r IDRange) Validate(reserved ...uint32) error {
	if r.Count == 0 {
		return nil
	}
	if r.Count < idSliceSize {
		return fmt.Errorf("sandbox id range %v: holds fewer than %d ids", r, idSliceSize)
	}
	if uint64(r.First)+uint64(r.Count) > 1<<32-1 {
		return fmt.Errorf("sandbox id range %v: goes past the largest id", r)
	}
	for _, id := range append([]uint32{0}, reserved...) {
		if r.Contains(id) {
			return fmt.Errorf("sandbox id range %v: holds id %d, which is not the sandboxes' own", r, id)
		}
	}
	return nil
}

// Split divides r into n ranges of equal size, whole slices each (for
// runtimes that run side by side); a range too small for n gives empty
// ones.
func (r IDRange) Split(n int) []IDRange {
	parts := make([]IDRange, n)
	if n == 0 {
		return parts
	}
	slices := r.Count / idSliceSize / uint32(n)
	for i := range parts {
		if slices > 0 {
			parts[i] = IDRange{First: r.First + uint32(i)*slices*idSliceSize, Count: slices * idSliceSize}
		}
	}
	return parts
}

// idSlices hands out a Runner's range to its zygotes, a slice each; a slice
// given back goes to the end of the queue, so ids are reused as late as
// they can be.
type idSlices struct {
	mu   sync.Mutex
	free []uint32 // first ids of the free slices
}

func newIDSlices(r IDRange) *idSlices {
	s := &idSlices{}
	for first := uint64(r.First); first+idSliceSize <= uint64(r.First)+uint64(r.Count); first += idSliceSize {
		s.free = append(s.free, uint32(first))
	}
	return s
}

// take gives a free slice, or an error when every one is in use.
func (s *idSlices) take() (IDRange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.free) == 0 {
		return IDRange{}, fmt.Errorf("every sandbox id slice is in use by a live zygote (a bigger --sandbox-ids range allows more)")
	}
	first := s.free[0]
	s.free = s.free[1:]
	return IDRange{First: first, Count: idSliceSize}, nil
}

// give returns a slice taken before.
func (s *idSlices) give(r IDRange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = append(s.free, r.First)
}

// idMapHandoff is the runner's side of an IDMapHandoff: two pipes, whose
// jail ends become descriptors 4 (block) and 5 (info) of the jail, after
// the zygote's control socket (3). A nil *idMapHandoff hands nothing off.
type idMapHandoff struct {
	blockR, blockW *os.File
	infoR, infoW   *os.File
}

func newIDMapHandoff() (*idMapHandoff, error) {
	blockR, blockW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cannot create the id-map pipes: %w", err)
	}
	infoR, infoW, err := os.Pipe()
	if err != nil {
		blockR.Close()
		blockW.Close()
		return nil, fmt.Errorf("cannot create the id-map pipes: %w", err)
	}
	return &idMapHandoff{blockR: blockR, blockW: blockW, infoR: infoR, infoW: infoW}, nil
}

// spec is what the jail is told: the descriptor numbers its ends get.
func (h *idMapHandoff) spec() *IDMapHandoff {
	if h == nil {
		return nil
	}
	return &IDMapHandoff{BlockFD: 4, InfoFD: 5}
}

// jailEnds are the jail's ends, in descriptor order from 4.
func (h *idMapHandoff) jailEnds() []*os.File {
	if h == nil {
		return nil
	}
	return []*os.File{h.blockR, h.infoW}
}

// closeJailEnds closes the runner's copies of the jail's ends once the
// jail holds them.
func (h *idMapHandoff) closeJailEnds() {
	if h != nil {
		h.blockR.Close()
		h.infoW.Close()
	}
}

// close closes the runner's ends.
func (h *idMapHandoff) close() {
	if h != nil {
		h.blockW.Close()
		h.infoR.Close()
	}
}

// mapJail reads which process holds the jail's new user namespace, maps
// in it the jail's own uid and gid to themselves and the slice ids to
// themselves, then lets the jail go on. The runner can: it is root.
func (h *idMapHandoff) mapJail(deadline time.Time, uid, gid uint32, ids IDRange) error {
	h.infoR.SetReadDeadline(deadline)
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.NewDecoder(io.LimitReader(h.infoR, 4096)).Decode(&info); err != nil {
		return fmt.Errorf("reading the jail's info: %w", err)
	}
	if info.ChildPID <= 0 {
		return fmt.Errorf("the jail's info names no process")
	}
	for _, m := range []struct {
		file string
		own  uint32
	}{{"uid_map", uid}, {"gid_map", gid}} {
		line := fmt.Sprintf("%d %d 1\n%d %d %d\n", m.own, m.own, ids.First, ids.First, ids.Count)
		path := fmt.Sprintf("/proc/%d/%s", info.ChildPID, m.file)
		if err := os.WriteFile(path, []byte(line), 0); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	h.blockW.SetWriteDeadline(deadline)
	if _, err := h.blockW.Write([]byte{1}); err != nil {
		return fmt.Errorf("letting the jail go on: %w", err)
	}
	return nil
}

// MappedHere says whether every id of r is a uid and a gid of the user
// namespace this process runs in (/proc/self/uid_map and gid_map): in a
// container's user namespace, ids past its map cannot be mapped into the
// jail either.
func (r IDRange) MappedHere() (bool, error) {
	for _, file := range []string{"/proc/self/uid_map", "/proc/self/gid_map"} {
		data, err := os.ReadFile(file)
		if err != nil {
			return false, err
		}
		if !idMapHolds(string(data), r) {
			return false, nil
		}
	}
	return true, nil
}

// idMapHolds says whether the uid_map text m has one extent that holds
// all of r in its first column (the ids of this namespace).
func idMapHolds(m string, r IDRange) bool {
	for _, line := range strings.Split(m, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		first, err1 := strconv.ParseUint(f[0], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 == nil && err2 == nil && uint64(r.First) >= first && uint64(r.First)+uint64(r.Count) <= first+count {
			return true
		}
	}
	return false
}
