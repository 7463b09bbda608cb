package controller

import (
	"fmt"
	"os"
	"testing"
)

func TestDebugChaos(t *testing.T) {
	if os.Getenv("DEBUGSEED") == "" {
		t.Skip()
	}
	var seed uint64
	fmt.Sscan(os.Getenv("DEBUGSEED"), &seed)
	debugSeed = &seed
	TestSimulateChaos(t)
}
