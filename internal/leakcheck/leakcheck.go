// Package leakcheck is the TestMain of every package in the module: it runs the tests and then
// fails the run if goroutines are left behind. quic-go keeps a closed connection around for a
// few probe timeouts to answer retransmissions, which after a blackholed path can take seconds,
// so a leak is what is still there after waiting for those.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// grace bounds the wait for closing connections to finish.
const grace = 20 * time.Second

// Main runs m's tests, then checks for leaked goroutines, and exits.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(grace)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
