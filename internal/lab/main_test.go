package lab

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: everything the package starts must
// stop when what owns it is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
