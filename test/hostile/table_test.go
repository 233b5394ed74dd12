package hostile

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// drillsSection is the heading of the hand-written table in test/DRILLS.md
// (`make drill` regenerates the drills' table above it and keeps it).
const drillsSection = "## Hostile suite"

// TestDrillsTable keeps test/DRILLS.md's hostile table and the tests in
// step: every test a row names exists in the file or package it names,
// every reason it names is one the tree counts, and every TestAttack… of
// this package has a row.
func TestDrillsTable(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "DRILLS.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n"+drillsSection+"\n")
	require.True(t, ok, "test/DRILLS.md has no %q section", drillsSection)
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	sources := map[string]string{} // test file or package → its test sources
	read := func(path string) string {
		if s, ok := sources[path]; ok {
			return s
		}
		files := []string{filepath.Join("..", "..", path)}
		if !strings.HasSuffix(path, ".go") {
			files, err = filepath.Glob(filepath.Join("..", "..", path, "*_test.go"))
			require.NoError(t, err)
		}
		var b strings.Builder
		for _, f := range files {
			src, err := os.ReadFile(f)
			require.NoError(t, err, "DRILLS.md names %s", path)
			b.Write(src)
		}
		sources[path] = b.String()
		return b.String()
	}
	counted := countedReasons(t)
	named := map[string]bool{}
	rows := 0
	testRef := regexp.MustCompile("`([a-z0-9_/.]+)` ((?:Test[A-Za-z0-9_]+(?:, )?)+)")
	reasonRef := regexp.MustCompile("`([a-z_]+)`")
	for _, line := range strings.Split(section, "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 7 || strings.HasPrefix(strings.TrimSpace(cols[1]), "---") || strings.TrimSpace(cols[1]) == "attack" {
			continue
		}
		rows++
		m := testRef.FindStringSubmatch(cols[2])
		require.NotNil(t, m, "row %q names no `path` TestName", line)
		src := read(m[1])
		for _, name := range strings.Split(m[2], ", ") {
			require.Contains(t, src, "func "+name+"(", "DRILLS.md: %s has no %s", m[1], name)
			if m[1] == "test/hostile" {
				named[name] = true
			}
		}
		for _, r := range reasonRef.FindAllStringSubmatch(cols[4], -1) {
			require.True(t, counted[r[1]], "DRILLS.md: reason %q is not one the tree counts", r[1])
		}
	}
	require.NotZero(t, rows)
	own, err := filepath.Glob("*_test.go")
	require.NoError(t, err)
	for _, f := range own {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`func (TestAttack[A-Za-z0-9_]*)\(`).FindAllStringSubmatch(string(src), -1) {
			require.True(t, named[m[1]], "%s has no row in test/DRILLS.md's %q", m[1], drillsSection)
		}
	}
}

// countedReasons are the reason labels in the tree's refusal tables: the
// quoted snake_case strings after a gRPC code in ca/service/errors.go and
// in identity's and identity/k8s's NewRefusal calls.
func countedReasons(t *testing.T) map[string]bool {
	t.Helper()
	reasons := map[string]bool{}
	files := []string{filepath.Join("..", "..", "ca", "service", "errors.go")}
	for _, dir := range []string{"identity", filepath.Join("identity", "k8s")} {
		more, err := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
		require.NoError(t, err)
		files = append(files, more...)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`codes\.[A-Za-z]+, "([a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
			reasons[m[1]] = true
		}
	}
	require.NotEmpty(t, reasons)
	return reasons
}
