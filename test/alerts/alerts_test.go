// Package alerts checks certmesh's shipped alerting rules with Prometheus' own
// rule parser, so a typo in an expression, a template or a field fails the
// build. It is a separate module so that prometheus/prometheus stays out of
// certmesh's own dependency graph.
package alerts

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

const dir = "../../deploy/alerts"

// wantAlerts are the conditions the operability issue asks to alert on.
var wantAlerts = []string{
	"CertmeshEdgeCertificateExpiringSoon", // edge certificate < 14 days
	"CertmeshSVIDPastEightyPercentOfLife", // mesh SVID past 80% of its life
	"CertmeshACMEOrdersFailing",           // repeated ACME failures
	"CertmeshCARootExpiringSoon",          // CA or root nearing expiry
	"CertmeshCAIntermediateExpiringSoon",
	"CertmeshCARotationStuck", // rotation stuck or overdue
	"CertmeshCAIntermediateRenewalFailing",
	"CertmeshRegistrationsEditRefused", // an edit of the registrations file not in force
}

func parse(t *testing.T, content []byte) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation)
	require.Empty(t, errs, "rulefmt: %v", errs)
	return groups
}

func TestPlainRulesFileParses(t *testing.T) {
	groups, errs := rulefmt.ParseFile(filepath.Join(dir, "certmesh.rules.yaml"), false, model.UTF8Validation)
	require.Empty(t, errs, "rulefmt: %v", errs)
	requireAlerts(t, groups)
}

func TestPrometheusRuleMatchesPlainFile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(dir, "prometheusrule.yaml"))
	require.NoError(t, err)
	var obj struct {
		APIVersion string         `yaml:"apiVersion"`
		Kind       string         `yaml:"kind"`
		Spec       map[string]any `yaml:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(data, &obj))
	require.Equal(t, "monitoring.coreos.com/v1", obj.APIVersion)
	require.Equal(t, "PrometheusRule", obj.Kind)
	spec, err := yaml.Marshal(obj.Spec)
	require.NoError(t, err)
	fromCR := parse(t, spec)
	requireAlerts(t, fromCR)

	plain, err := os.ReadFile(filepath.Join(dir, "certmesh.rules.yaml"))
	require.NoError(t, err)
	require.Equal(t, parse(t, plain).Groups, fromCR.Groups, "the PrometheusRule and the plain file must carry the same rules")
}

// TestMetricNamesFollowConventions keeps every series an alert reads inside
// certmesh's namespace and Prometheus' naming rules.
func TestMetricNamesFollowConventions(t *testing.T) {
	groups, errs := rulefmt.ParseFile(filepath.Join(dir, "certmesh.rules.yaml"), false, model.UTF8Validation)
	require.Empty(t, errs)
	name := regexp.MustCompile(`^certmesh_[a-z0-9_]+$`)
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := parser.ParseExpr(r.Expr)
			require.NoError(t, err, r.Alert)
			for _, vs := range parser.ExtractSelectors(expr) {
				for _, m := range vs {
					if m.Name == "__name__" {
						require.Regexp(t, name, m.Value, "%s reads %s", r.Alert, m.Value)
					}
				}
			}
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
		}
	}
}

func TestBrokenRulesAreRejected(t *testing.T) {
	tests := []struct {
		name string
		yaml string
	}{
		{"typo in expression", `groups:
- name: g
  rules:
  - alert: A
    expr: certmesh_edge_certificate_expiry_timestamp_seconds - time( < 14 * 86400
`},
		{"unknown field", `groups:
- name: g
  rules:
  - alert: A
    expr: up == 0
    fro: 5m
`},
		{"bad template", `groups:
- name: g
  rules:
  - alert: A
    expr: up == 0
    annotations:
      summary: "{{ $labels.name "
`},
		{"alert and record", `groups:
- name: g
  rules:
  - alert: A
    record: a:b
    expr: up == 0
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := rulefmt.Parse([]byte(tt.yaml), false, model.UTF8Validation)
			require.NotEmpty(t, errs, "rulefmt must refuse this")
		})
	}
}

func requireAlerts(t *testing.T, groups *rulefmt.RuleGroups) {
	t.Helper()
	var got []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			got = append(got, r.Alert)
		}
	}
	for _, want := range wantAlerts {
		require.True(t, slices.Contains(got, want), "missing alert %s in %v", want, got)
	}
}
