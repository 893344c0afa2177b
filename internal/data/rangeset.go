package data

import "slices"

// Range is the half-open byte range [Start, End).
type Range struct {
	Start, End uint64 // first value in, first value after
}

// RangeSet is a set of uint64 values stored as sorted, disjoint, non-adjacent,
// non-empty ranges. The zero value is an empty set.
//
// Reassembly mostly extends the last range or drops the first one, so both
// ends are cheap: extending or appending at the back costs O(1) and, once the
// backing array has room, no allocation. Out-of-order inserts binary-search and
// then shift the tail, which is O(Len); callers facing hostile peers bound Len.
// Arguments with start >= end describe an empty range throughout.
type RangeSet struct {
	r []Range
}

// Add adds [start, end), merging it with any range it overlaps or touches.
func (s *RangeSet) Add(start, end uint64) {
	if start >= end {
		return
	}
	n := len(s.r)
	if n == 0 || start > s.r[n-1].End {
		s.r = append(s.r, Range{start, end})
		return
	}
	if last := &s.r[n-1]; start >= last.Start {
		last.End = max(last.End, end)
		return
	}
	// i is the first range that ends at or after start, so it overlaps or
	// touches [start, end) unless it begins after end. j is the first range
	// beginning after end; ranges [i, j) all merge with the new one.
	i := s.search(start)
	j := i + searchStartAfter(s.r[i:], end)
	if i == j {
		s.r = slices.Insert(s.r, i, Range{start, end})
		return
	}
	s.r[i] = Range{min(start, s.r[i].Start), max(end, s.r[j-1].End)}
	s.r = slices.Delete(s.r, i+1, j)
}

// Remove removes [start, end) from the set, splitting a range if needed.
func (s *RangeSet) Remove(start, end uint64) {
	if start >= end || len(s.r) == 0 {
		return
	}
	// Ranges [i, j) intersect [start, end): unlike Add, touching is not enough.
	i := s.searchEndAfter(start)
	j := i + searchStartAtOrAfter(s.r[i:], end)
	if i >= j {
		return
	}
	first, last := s.r[i], s.r[j-1]
	var keep [2]Range
	k := keep[:0]
	if first.Start < start {
		k = append(k, Range{first.Start, start})
	}
	if last.End > end {
		k = append(k, Range{end, last.End})
	}
	s.r = slices.Replace(s.r, i, j, k...)
}

// RemoveBelow removes every value below x.
func (s *RangeSet) RemoveBelow(x uint64) {
	i := s.searchEndAfter(x)
	// Shift down rather than reslice, so the freed front capacity is reused
	// by later appends instead of forcing reallocation.
	s.r = slices.Delete(s.r, 0, i)
	if len(s.r) > 0 && s.r[0].Start < x {
		s.r[0].Start = x
	}
}

// Contains reports whether x is in the set.
func (s *RangeSet) Contains(x uint64) bool {
	i := s.searchEndAfter(x)
	return i < len(s.r) && s.r[i].Start <= x
}

// ContainsRange reports whether every value of [start, end) is in the set. An
// empty range is trivially contained.
func (s *RangeSet) ContainsRange(start, end uint64) bool {
	if start >= end {
		return true
	}
	i := s.searchEndAfter(start)
	return i < len(s.r) && s.r[i].Start <= start && end <= s.r[i].End
}

// Ranges returns the ranges in ascending order. The slice aliases the set's
// storage: the caller must not modify it, and it is only valid until the set
// next changes.
func (s *RangeSet) Ranges() []Range { return s.r }

// Len returns the number of disjoint ranges.
func (s *RangeSet) Len() int { return len(s.r) }

// Size returns the number of values in the set. A set that covers all 2^64
// values cannot be built from half-open uint64 ranges, so this cannot overflow.
func (s *RangeSet) Size() uint64 {
	var n uint64
	for _, r := range s.r {
		n += r.End - r.Start
	}
	return n
}

// Min returns the smallest value in the set, or false if the set is empty.
func (s *RangeSet) Min() (uint64, bool) {
	if len(s.r) == 0 {
		return 0, false
	}
	return s.r[0].Start, true
}

// Max returns the End of the last range (one past the largest value), or
// false if the set is empty.
func (s *RangeSet) Max() (uint64, bool) {
	if len(s.r) == 0 {
		return 0, false
	}
	return s.r[len(s.r)-1].End, true
}

// Missing appends to dst the sub-ranges of [start, end) that are not in the
// set, in ascending order, and returns the extended slice.
func (s *RangeSet) Missing(dst []Range, start, end uint64) []Range {
	if start >= end {
		return dst
	}
	if n := len(s.r); n == 0 || start >= s.r[n-1].End {
		return append(dst, Range{start, end})
	}
	for _, r := range s.r[s.searchEndAfter(start):] {
		if r.Start >= end {
			break
		}
		if start < r.Start {
			dst = append(dst, Range{start, r.Start})
		}
		start = r.End
		if start >= end {
			return dst
		}
	}
	return append(dst, Range{start, end})
}

// search returns the index of the first range with End >= x: the first range
// that x overlaps or touches from the left.
func (s *RangeSet) search(x uint64) int {
	i, _ := slices.BinarySearchFunc(s.r, x, func(r Range, x uint64) int {
		if r.End < x {
			return -1
		}
		return 1
	})
	return i
}

// searchEndAfter returns the index of the first range with End > x: the first
// range that contains x or lies wholly above it.
func (s *RangeSet) searchEndAfter(x uint64) int {
	i, _ := slices.BinarySearchFunc(s.r, x, func(r Range, x uint64) int {
		if r.End <= x {
			return -1
		}
		return 1
	})
	return i
}

// searchStartAfter returns the index of the first range in r with Start > x.
func searchStartAfter(r []Range, x uint64) int {
	i, _ := slices.BinarySearchFunc(r, x, func(r Range, x uint64) int {
		if r.Start <= x {
			return -1
		}
		return 1
	})
	return i
}

// searchStartAtOrAfter returns the index of the first range in r with Start >= x.
func searchStartAtOrAfter(r []Range, x uint64) int {
	i, _ := slices.BinarySearchFunc(r, x, func(r Range, x uint64) int {
		if r.Start < x {
			return -1
		}
		return 1
	})
	return i
}

// Overlaps reports whether any value of [start, end) is in the set.
func (s *RangeSet) Overlaps(start, end uint64) bool {
	if start >= end {
		return false
	}
	i := s.searchEndAfter(start)
	return i < len(s.r) && s.r[i].Start < end
}

// Intersect appends to dst the sub-ranges of [start, end) that are in the set, in
// ascending order, and returns the extended slice.
func (s *RangeSet) Intersect(dst []Range, start, end uint64) []Range {
	if start >= end {
		return dst
	}
	for _, r := range s.r[s.searchEndAfter(start):] {
		if r.Start >= end {
			break
		}
		dst = append(dst, Range{max(r.Start, start), min(r.End, end)})
	}
	return dst
}
