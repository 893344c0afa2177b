package data

import (
	"math"
	"slices"
	"testing"
)

// rs builds a set from ranges added in the given order.
func rs(rr ...Range) *RangeSet {
	var s RangeSet
	for _, r := range rr {
		s.Add(r.Start, r.End)
	}
	return &s
}

// checkInvariants fails unless the ranges are non-empty, sorted, disjoint and
// non-adjacent: the representation every method relies on.
func checkInvariants(t *testing.T, s *RangeSet) {
	t.Helper()
	r := s.Ranges()
	for i, x := range r {
		if x.Start >= x.End {
			t.Fatalf("range %d %v is empty: %v", i, x, r)
		}
		if i > 0 && r[i-1].End >= x.Start {
			t.Fatalf("ranges %d and %d overlap or touch: %v", i-1, i, r)
		}
	}
}

func TestRangeSetAdd(t *testing.T) {
	const max = math.MaxUint64
	tests := []struct {
		name string
		add  []Range
		want []Range
	}{
		{"empty", nil, nil},
		{"empty range is a no-op", []Range{{5, 5}}, nil},
		{"inverted range is a no-op", []Range{{9, 5}}, nil},
		{"one", []Range{{0, 10}}, []Range{{0, 10}}},
		{"append adjacent", []Range{{0, 10}, {10, 20}}, []Range{{0, 20}}},
		{"append disjoint", []Range{{0, 10}, {11, 20}}, []Range{{0, 10}, {11, 20}}},
		{"extend last from inside", []Range{{0, 10}, {5, 15}}, []Range{{0, 15}}},
		{"inside last", []Range{{0, 10}, {2, 3}}, []Range{{0, 10}}},
		{"prepend disjoint", []Range{{10, 20}, {0, 5}}, []Range{{0, 5}, {10, 20}}},
		{"prepend adjacent", []Range{{10, 20}, {0, 10}}, []Range{{0, 20}}},
		{"prepend overlapping", []Range{{10, 20}, {5, 12}}, []Range{{5, 20}}},
		{"fill gap exactly", []Range{{0, 10}, {20, 30}, {10, 20}}, []Range{{0, 30}}},
		{"fill part of gap", []Range{{0, 10}, {20, 30}, {12, 15}}, []Range{{0, 10}, {12, 15}, {20, 30}}},
		{"touch left of gap", []Range{{0, 10}, {20, 30}, {10, 15}}, []Range{{0, 15}, {20, 30}}},
		{"touch right of gap", []Range{{0, 10}, {20, 30}, {15, 20}}, []Range{{0, 10}, {15, 30}}},
		{"swallow several", []Range{{2, 3}, {5, 6}, {8, 9}, {11, 12}, {1, 10}}, []Range{{1, 10}, {11, 12}}},
		{"swallow all", []Range{{2, 3}, {5, 6}, {8, 9}, {0, 100}}, []Range{{0, 100}}},
		{"duplicate", []Range{{0, 10}, {20, 30}, {0, 10}}, []Range{{0, 10}, {20, 30}}},
		{"inside middle", []Range{{0, 10}, {20, 30}, {40, 50}, {22, 28}}, []Range{{0, 10}, {20, 30}, {40, 50}}},
		{"top of uint64", []Range{{max - 10, max}, {0, 1}, {max - 20, max - 10}}, []Range{{0, 1}, {max - 20, max}}},
		{"whole uint64", []Range{{0, max}}, []Range{{0, max}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rs(tt.add...)
			checkInvariants(t, s)
			if got := s.Ranges(); !slices.Equal(got, tt.want) {
				t.Errorf("Ranges() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRangeSetRemove(t *testing.T) {
	base := []Range{{10, 20}, {30, 40}, {50, 60}}
	tests := []struct {
		name       string
		start, end uint64
		want       []Range
	}{
		{"empty range", 15, 15, base},
		{"inverted range", 18, 12, base},
		{"below all", 0, 10, base},
		{"above all", 60, 100, base},
		{"in a gap", 20, 30, base},
		{"prefix", 5, 15, []Range{{15, 20}, {30, 40}, {50, 60}}},
		{"suffix", 15, 25, []Range{{10, 15}, {30, 40}, {50, 60}}},
		{"split", 33, 36, []Range{{10, 20}, {30, 33}, {36, 40}, {50, 60}}},
		{"whole one exactly", 30, 40, []Range{{10, 20}, {50, 60}}},
		{"whole one and more", 25, 45, []Range{{10, 20}, {50, 60}}},
		{"across two", 15, 35, []Range{{10, 15}, {35, 40}, {50, 60}}},
		{"across three", 15, 55, []Range{{10, 15}, {55, 60}}},
		{"everything", 0, math.MaxUint64, nil},
		{"first byte", 10, 11, []Range{{11, 20}, {30, 40}, {50, 60}}},
		{"last byte", 59, 60, []Range{{10, 20}, {30, 40}, {50, 59}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rs(base...)
			s.Remove(tt.start, tt.end)
			checkInvariants(t, s)
			if got := s.Ranges(); !slices.Equal(got, tt.want) {
				t.Errorf("Remove(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
			}
		})
	}
	t.Run("from empty", func(t *testing.T) {
		var s RangeSet
		s.Remove(0, 100)
		if s.Len() != 0 {
			t.Errorf("Len() = %d, want 0", s.Len())
		}
	})
}

func TestRangeSetRemoveBelow(t *testing.T) {
	base := []Range{{10, 20}, {30, 40}}
	tests := []struct {
		name string
		x    uint64
		want []Range
	}{
		{"zero", 0, base},
		{"at first start", 10, base},
		{"inside first", 15, []Range{{15, 20}, {30, 40}}},
		{"at first end", 20, []Range{{30, 40}}},
		{"in gap", 25, []Range{{30, 40}}},
		{"inside last", 39, []Range{{39, 40}}},
		{"at last end", 40, nil},
		{"max", math.MaxUint64, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rs(base...)
			s.RemoveBelow(tt.x)
			checkInvariants(t, s)
			if got := s.Ranges(); !slices.Equal(got, tt.want) {
				t.Errorf("RemoveBelow(%d) = %v, want %v", tt.x, got, tt.want)
			}
		})
	}
}

func TestRangeSetQueries(t *testing.T) {
	s := rs(Range{10, 20}, Range{30, 40})
	contains := map[uint64]bool{0: false, 9: false, 10: true, 19: true, 20: false, 29: false, 30: true, 39: true, 40: false, math.MaxUint64: false}
	for x, want := range contains {
		if got := s.Contains(x); got != want {
			t.Errorf("Contains(%d) = %v, want %v", x, got, want)
		}
	}
	containsRange := []struct {
		start, end uint64
		want       bool
	}{
		{10, 20, true}, {12, 15, true}, {30, 40, true}, {9, 20, false}, {10, 21, false},
		{15, 35, false}, {20, 30, false}, {5, 5, true}, {25, 25, true}, {9, 3, true},
	}
	for _, tt := range containsRange {
		if got := s.ContainsRange(tt.start, tt.end); got != tt.want {
			t.Errorf("ContainsRange(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
		}
	}
	if got := s.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2", got)
	}
	if got := s.Size(); got != 20 {
		t.Errorf("Size() = %d, want 20", got)
	}
	if v, ok := s.Min(); v != 10 || !ok {
		t.Errorf("Min() = %d, %v, want 10, true", v, ok)
	}
	if v, ok := s.Max(); v != 40 || !ok {
		t.Errorf("Max() = %d, %v, want 40, true", v, ok)
	}

	var empty RangeSet
	if _, ok := empty.Min(); ok {
		t.Error("empty Min() ok = true")
	}
	if _, ok := empty.Max(); ok {
		t.Error("empty Max() ok = true")
	}
	if empty.Contains(0) || empty.ContainsRange(0, 1) || empty.Size() != 0 || empty.Len() != 0 {
		t.Error("empty set reports content")
	}
}

func TestRangeSetMissing(t *testing.T) {
	base := []Range{{10, 20}, {30, 40}}
	tests := []struct {
		name       string
		set        []Range
		start, end uint64
		want       []Range
	}{
		{"empty set", nil, 5, 15, []Range{{5, 15}}},
		{"empty range", base, 15, 15, nil},
		{"inverted range", base, 15, 5, nil},
		{"all below", base, 0, 10, []Range{{0, 10}}},
		{"all above", base, 40, 50, []Range{{40, 50}}},
		{"covered", base, 12, 18, nil},
		{"covered exactly", base, 10, 20, nil},
		{"gap exactly", base, 20, 30, []Range{{20, 30}}},
		{"straddle start", base, 5, 15, []Range{{5, 10}}},
		{"straddle end", base, 15, 25, []Range{{20, 25}}},
		{"everything", base, 0, 50, []Range{{0, 10}, {20, 30}, {40, 50}}},
		{"ends at a range start", base, 0, 30, []Range{{0, 10}, {20, 30}}},
		{"starts at a range end", base, 20, 35, []Range{{20, 30}}},
		{"top of uint64", []Range{{math.MaxUint64 - 5, math.MaxUint64 - 2}}, math.MaxUint64 - 10, math.MaxUint64,
			[]Range{{math.MaxUint64 - 10, math.MaxUint64 - 5}, {math.MaxUint64 - 2, math.MaxUint64}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rs(tt.set...)
			prefix := []Range{{1, 2}}
			got := s.Missing(prefix, tt.start, tt.end)
			if !slices.Equal(got[:1], prefix) {
				t.Fatalf("Missing overwrote dst: %v", got)
			}
			if got := got[1:]; !slices.Equal(got, tt.want) {
				t.Errorf("Missing(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
			}
		})
	}
}

func TestRangeSetAddAppendAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var s RangeSet
	s.Add(0, 1) // the first range allocates the array
	off := uint64(1)
	if n := testing.AllocsPerRun(1000, func() {
		s.Add(off, off+1200)
		off += 1200
	}); n != 0 {
		t.Errorf("adjacent append: %v allocs per Add, want 0", n)
	}

	// The receive pattern with gaps: a disjoint range appended at the back
	// while the front is consumed reuses the array once it has grown.
	s = RangeSet{}
	off = 0
	cycle := func() {
		s.Add(off+10, off+20)
		s.Add(off+30, off+40)
		s.Add(off, off+5) // inserted at the front
		s.RemoveBelow(off + 5)
		s.Add(off+5, off+40)
		s.RemoveBelow(off + 40)
		off += 40
	}
	for range 10 {
		cycle()
	}
	if n := testing.AllocsPerRun(1000, cycle); n != 0 {
		t.Errorf("steady state with gaps: %v allocs per cycle, want 0", n)
	}
}

func TestRangeSetIntersectOverlaps(t *testing.T) {
	base := []Range{{10, 20}, {30, 40}}
	tests := []struct {
		name       string
		set        []Range
		start, end uint64
		want       []Range
	}{
		{"empty set", nil, 5, 15, nil},
		{"empty range", base, 15, 15, nil},
		{"inverted range", base, 15, 5, nil},
		{"all below", base, 0, 10, nil},
		{"all above", base, 40, 50, nil},
		{"gap exactly", base, 20, 30, nil},
		{"inside", base, 12, 18, []Range{{12, 18}}},
		{"straddle start", base, 5, 15, []Range{{10, 15}}},
		{"straddle end", base, 15, 25, []Range{{15, 20}}},
		{"everything", base, 0, 50, []Range{{10, 20}, {30, 40}}},
		{"from a range end", base, 20, 35, []Range{{30, 35}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rs(tt.set...)
			prefix := []Range{{1, 2}}
			got := s.Intersect(prefix, tt.start, tt.end)
			if !slices.Equal(got[:1], prefix) {
				t.Fatalf("Intersect overwrote dst: %v", got)
			}
			if got := got[1:]; !slices.Equal(got, tt.want) {
				t.Errorf("Intersect(%d, %d) = %v, want %v", tt.start, tt.end, got, tt.want)
			}
			if o := s.Overlaps(tt.start, tt.end); o != (len(tt.want) > 0) {
				t.Errorf("Overlaps(%d, %d) = %v, want %v", tt.start, tt.end, o, len(tt.want) > 0)
			}
		})
	}
}
