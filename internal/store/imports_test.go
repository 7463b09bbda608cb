package store

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsOnlyTopology guards the one-way dependencies of STYLE.md: the store depends on the shared
// model and on no other Meridian package, so the agent, the controller and the proxy can all use it.
func TestImportsOnlyTopology(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("glob: %v (%d files)", err, len(files))
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/meridiandb/meridian/") && path != "github.com/meridiandb/meridian/internal/topology" {
				t.Errorf("%s imports %s: the store may depend only on internal/topology", name, path)
			}
		}
	}
}
