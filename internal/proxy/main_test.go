package proxy_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: every proxy, pool, client session
// and discovery loop must stop when closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
