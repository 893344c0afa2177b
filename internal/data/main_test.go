package data

import (
	"testing"

	"github.com/kwik-go/kwik/internal/leakcheck"
)

// TestMain fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) { leakcheck.Main(m) }
