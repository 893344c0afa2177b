//go:build race

package data

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = true
