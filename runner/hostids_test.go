package runner

import (
	"slices"
	"strings"
	"testing"
)

func TestIDRange(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    IDRange
		invalid string // Validate's complaint, if any
	}{
		{in: "off"},
		{in: ""},
		{in: "100000:65536", want: IDRange{100000, 65536}},
		{in: "100000:255", want: IDRange{100000, 255}, invalid: "fewer than 256"},
		{in: "0:65536", want: IDRange{0, 65536}, invalid: "holds id 0"},
		{in: "65000:1024", want: IDRange{65000, 1024}, invalid: "holds id 65534"},
		{in: "4294967000:1024", want: IDRange{4294967000, 1024}, invalid: "past the largest id"},
	} {
		got, err := ParseIDRange(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseIDRange(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		err = got.Validate(65534, 65534)
		if tc.invalid == "" && err != nil || tc.invalid != "" && (err == nil || !strings.Contains(err.Error(), tc.invalid)) {
			t.Errorf("%v.Validate() = %v, want %q", got, err, tc.invalid)
		}
	}
	for _, bad := range []string{"100000", "a:1", "1:b", "-1:5", "1:99999999999"} {
		if _, err := ParseIDRange(bad); err == nil {
			t.Errorf("ParseIDRange(%q) accepted", bad)
		}
	}
	if err := DefaultSandboxIDs.Validate(65534, 65534); err != nil {
		t.Errorf("the default range: %v", err)
	}
}

func TestIDRangeSplit(t *testing.T) {
	parts := IDRange{1000, 3 * 256 * 2}.Split(2)
	if want := []IDRange{{1000, 768}, {1768, 768}}; !slices.Equal(parts, want) {
		t.Errorf("Split(2) = %v, want %v", parts, want)
	}
	// Whole slices only; a range too small for every part leaves them empty.
	if parts := (IDRange{1000, 300}).Split(2); parts[0].Count != 0 || parts[1].Count != 0 {
		t.Errorf("300 ids in two parts = %v, want two empty ranges", parts)
	}
}

func TestIDSlicesAreReusedLast(t *testing.T) {
	s := newIDSlices(IDRange{1000, 3 * idSliceSize})
	a, _ := s.take()
	b, _ := s.take()
	c, _ := s.take()
	if a.First != 1000 || b.First != 1256 || c.First != 1512 || a.Count != idSliceSize {
		t.Fatalf("slices %v %v %v", a, b, c)
	}
	if _, err := s.take(); err == nil {
		t.Fatal("a fourth slice out of three")
	}
	s.give(b)
	s.give(a)
	if got, _ := s.take(); got != b {
		t.Errorf("after giving back b then a, took %v, want b (%v) first", got, b)
	}
}

func TestAncestorDirs(t *testing.T) {
	got := ancestorDirs([]string{"/usr/lib", "/usr/share/zoneinfo", "/etc/alternatives", "/usr", "/sys/kernel/mm/x"})
	want := []string{"/etc", "/sys", "/sys/kernel", "/usr/share", "/sys/kernel/mm"}
	if !slices.Equal(got, want) {
		t.Errorf("ancestorDirs = %v, want %v", got, want)
	}
}

func TestIDMapHolds(t *testing.T) {
	host := "         0          0 4294967295\n"
	container := "         0       1000          1\n         1     100000      65536\n"
	for _, tc := range []struct {
		m    string
		r    IDRange
		want bool
	}{
		{host, DefaultSandboxIDs, true},
		{container, DefaultSandboxIDs, false},
		{container, IDRange{20000, 8192}, true},
		{container, IDRange{60000, 8192}, false}, // runs past the extent
		{"", IDRange{1, 256}, false},
	} {
		if got := idMapHolds(tc.m, tc.r); got != tc.want {
			t.Errorf("idMapHolds(%q, %v) = %v, want %v", tc.m, tc.r, got, tc.want)
		}
	}
}
