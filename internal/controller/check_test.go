package controller

import (
	"testing"
)

// checkDecision is filled in by the invariant checks.
func checkDecision(t *testing.T, in Input, dec Decision) {}
