// helm-render: renders a Helm 3 chart's templates offline, the way `helm template` does, for
// validating the smtp-gateway chart on machines that have no helm binary (see
// scripts/validate-deployment.sh). It reproduces Helm 3's engine (pkg/engine/engine.go, funcs.go)
// on the same libraries: Go text/template, Masterminds/sprig v3 (minus env/expandenv, as Helm) and
// sigs.k8s.io/yaml. It is not Helm: no chart dependencies, no .Files, no lookup against a cluster
// (lookup returns an empty map, as `helm template` does), no values.schema.json, no hooks ordering.
//
// Usage: helm-render [--name N] [--namespace NS] [--kube-version 1.30.0] [--api-versions G/V]...
//
//	[-f values.yaml]... [--json] CHART_DIR
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type values = map[string]interface{}

// KubeVersion mirrors chartutil.KubeVersion.
type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

// VersionSet mirrors chartutil.VersionSet.
type VersionSet []string

// Has reports whether an API version (or version/kind) is available, as chartutil.VersionSet.Has.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion map[string]string
}

// Built-in API versions of a Kubernetes 1.30 cluster that this chart may ask about.
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"admissionregistration.k8s.io/v1", "apiextensions.k8s.io/v1", "coordination.k8s.io/v1",
	"discovery.k8s.io/v1", "events.k8s.io/v1", "scheduling.k8s.io/v1", "node.k8s.io/v1",
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	name := flag.String("name", "release-name", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "1.30.0", "Kubernetes version for .Capabilities")
	asJSON := flag.Bool("json", false, "print {\"manifests\": {file: text}, \"notes\": text} instead of a YAML stream")
	var valueFiles, apiVersions multiFlag
	flag.Var(&valueFiles, "f", "values file (repeatable; later files win)")
	flag.Var(&apiVersions, "api-versions", "extra API version for .Capabilities.APIVersions (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helm-render [flags] CHART_DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *name, *namespace, *kubeVersion, valueFiles, apiVersions, *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func readYAMLMap(file string) (values, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := values{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

// mergeMaps is Helm's cli/values mergeMaps: b overrides a, maps merge recursively.
func mergeMaps(a, b values) values {
	out := make(values, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bv, ok := v.(map[string]interface{}); ok {
			if av, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(av, bv)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// coalesce is chartutil.CoalesceTables: defaults fill dst; a null in dst deletes the key.
func coalesce(dst, defaults values) values {
	if dst == nil {
		dst = values{}
	}
	for k, dv := range defaults {
		v, present := dst[k]
		switch {
		case present && v == nil:
			delete(dst, k)
		case !present:
			dst[k] = dv
		default:
			vm, ok1 := v.(map[string]interface{})
			dm, ok2 := dv.(map[string]interface{})
			if ok1 && ok2 {
				dst[k] = coalesce(vm, dm)
			}
		}
	}
	for k, v := range dst {
		if v == nil {
			delete(dst, k)
		}
	}
	return dst
}

var metadataKeys = map[string]string{
	"apiVersion": "APIVersion", "name": "Name", "version": "Version", "kubeVersion": "KubeVersion",
	"description": "Description", "type": "Type", "keywords": "Keywords", "home": "Home",
	"sources": "Sources", "dependencies": "Dependencies", "maintainers": "Maintainers", "icon": "Icon",
	"appVersion": "AppVersion", "deprecated": "Deprecated", "annotations": "Annotations",
}

func funcMap(t *template.Template, included map[string]int) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(data), "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		if included[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		included[name]++
		defer func() { included[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		c.Option("missingkey=zero")
		c.Funcs(funcMap(c, included))
		c, err = c.New(t.Name()).Parse(text)
		if err != nil {
			return "", err
		}
		var buf strings.Builder
		if err := c.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New("execution error: " + warn)
		}
		if s, ok := val.(string); ok && s == "" {
			return val, errors.New("execution error: " + warn)
		}
		return val, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New("execution error: " + msg) }
	f["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

func run(chartDir, name, namespace, kubeVersion string, valueFiles, apiVersions []string, asJSON bool) error {
	meta, err := readYAMLMap(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chart := values{}
	for k, v := range meta {
		if key, ok := metadataKeys[k]; ok {
			chart[key] = v
		}
	}
	chartName, _ := chart["Name"].(string)
	if chartName == "" {
		return errors.New("Chart.yaml has no name")
	}
	if chart["APIVersion"] != "v2" {
		return errors.New("Chart.yaml: apiVersion must be v2 (Helm 3)")
	}

	defaults, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	user := values{}
	for _, file := range valueFiles {
		v, err := readYAMLMap(file)
		if err != nil {
			return err
		}
		user = mergeMaps(user, v)
	}
	vals := coalesce(user, defaults)

	parts := strings.SplitN(strings.TrimPrefix(kubeVersion, "v"), ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("bad --kube-version %q", kubeVersion)
	}
	caps := Capabilities{
		KubeVersion: KubeVersion{Version: "v" + strings.TrimPrefix(kubeVersion, "v"), Major: parts[0], Minor: parts[1],
			GitVersion: "v" + strings.TrimPrefix(kubeVersion, "v")},
		APIVersions: append(VersionSet(append([]string{}, defaultAPIVersions...)), apiVersions...),
		HelmVersion: map[string]string{"Version": "v3.14.0"},
	}
	release := values{"Name": name, "Namespace": namespace, "IsInstall": true, "IsUpgrade": false,
		"Revision": 1, "Service": "Helm"}

	// Load every file under templates/, named "<chart>/templates/<path>" as Helm names them.
	sources := map[string]string{}
	templatesDir := filepath.Join(chartDir, "templates")
	err = filepath.Walk(templatesDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(chartDir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sources[path.Join(chartName, filepath.ToSlash(rel))] = string(data)
		return nil
	})
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(sources))
	for k := range sources {
		keys = append(keys, k)
	}
	// Helm's sortTemplates: deeper paths first, then reverse lexical order.
	sort.Slice(keys, func(i, j int) bool {
		a, b := strings.Count(keys[i], "/"), strings.Count(keys[j], "/")
		if a != b {
			return a > b
		}
		return keys[i] > keys[j]
	})

	t := template.New("gotpl")
	t.Option("missingkey=zero")
	included := map[string]int{}
	t.Funcs(funcMap(t, included))
	for _, k := range keys {
		if _, err := t.New(k).Parse(sources[k]); err != nil {
			return fmt.Errorf("parse error in %s: %w", k, err)
		}
	}

	manifests := map[string]string{}
	notes := ""
	for _, k := range keys {
		if strings.HasPrefix(path.Base(k), "_") {
			continue
		}
		top := values{
			"Values":       vals,
			"Release":      release,
			"Chart":        chart,
			"Capabilities": caps,
			"Template":     values{"Name": k, "BasePath": path.Join(chartName, "templates")},
		}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, k, top); err != nil {
			return fmt.Errorf("rendering %s: %w", k, err)
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		if path.Base(k) == "NOTES.txt" {
			notes = out
			continue
		}
		manifests[k] = out
	}

	if asJSON {
		data, err := json.MarshalIndent(map[string]interface{}{"manifests": manifests, "notes": notes}, "", "  ")
		if err != nil {
			return err
		}
		fmt.Println(string(data))
		return nil
	}
	names := make([]string, 0, len(manifests))
	for k := range manifests {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, doc := range strings.Split("\n"+manifests[k], "\n---") {
			doc = strings.TrimPrefix(doc, "\n")
			if strings.TrimSpace(doc) == "" {
				continue
			}
			fmt.Printf("---\n# Source: %s\n%s\n", k, strings.TrimRight(doc, "\n"))
		}
	}
	return nil
}
