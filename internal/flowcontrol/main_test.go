package flowcontrol

import (
	"testing"

	"github.com/kwik-go/kwik/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
