// Package edgeconfig reads the edge YAML configuration file into an edge.Config:
// issuers (with Let's Encrypt presets), certificates and their solvers, DNS-01
// credentials from a file or from environment variables the file names. Parsing is
// strict: an unknown field is an error that names its line.
package edgeconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/certmesh/certmesh/edge"
)

// Options are the outside inputs of parsing, injected so cmd/ alone touches the
// process environment and tests need no files.
type Options struct {
	// BaseDir resolves relative file names (default: the config file's folder).
	BaseDir string
	// Getenv reads the variables a solver's `env` lists (default: none are set).
	Getenv func(string) string
	// ReadFile reads CA bundles and credential files (default os.ReadFile).
	ReadFile func(string) ([]byte, error)
}

// Load reads and parses the file at path.
func Load(path string, opts Options) (edge.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return edge.Config{}, fmt.Errorf("%w: %w", edge.ErrInvalidConfig, err)
	}
	if opts.BaseDir == "" {
		opts.BaseDir = filepath.Dir(path)
	}
	return Parse(data, opts)
}

// Parse turns YAML into the file-given part of an edge.Config; the caller adds Clock,
// Logger and the like, and edge.New validates the whole.
func Parse(data []byte, opts Options) (edge.Config, error) {
	opts = opts.withDefaults()
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return edge.Config{}, fmt.Errorf("%w: %w", edge.ErrInvalidConfig, err)
	}
	return f.toConfig(opts)
}

func (o Options) withDefaults() Options {
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	if o.ReadFile == nil {
		o.ReadFile = os.ReadFile
	}
	return o
}

func (o Options) path(p string) string {
	if p == "" || filepath.IsAbs(p) || o.BaseDir == "" {
		return p
	}
	return filepath.Join(o.BaseDir, p)
}

// parseEnvFile reads KEY=VALUE lines; blank lines and # comments are skipped.
func parseEnvFile(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("line %d: want KEY=VALUE", n)
		}
		out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out, sc.Err()
}
