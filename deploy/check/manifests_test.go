// Package check validates the Kubernetes manifests in deploy/k8s offline:
// a strict decode into the Kubernetes API types (unknown or misspelt
// fields fail), then the properties the service relies on. It is its own
// module so the service's go.mod stays free of Kubernetes dependencies.
package check

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func decodeStrict(t *testing.T, name string, out any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "k8s", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s does not decode strictly: %v", name, err)
	}
}

func TestEveryManifestIsChecked(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "k8s", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]bool{"deployment.yaml": true, "service.yaml": true, "hpa.yaml": true,
		"pdb.yaml": true, "namespace.yaml": true}
	for _, f := range files {
		if !checked[filepath.Base(f)] {
			t.Errorf("%s is not covered by this check", f)
		}
	}
}

func TestDeployment(t *testing.T) {
	var d appsv1.Deployment
	decodeStrict(t, "deployment.yaml", &d)
	if d.Kind != "Deployment" || d.APIVersion != "apps/v1" {
		t.Fatalf("kind %s/%s", d.APIVersion, d.Kind)
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container must be unprivileged without privilege escalation")
	}
	if sc != nil && (sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL") {
		t.Error("the container must drop ALL capabilities and add none")
	}
	pod := spec.SecurityContext
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
		t.Error("the pod must run as a non-root uid")
	}
	if spec.HostUsers == nil || *spec.HostUsers {
		t.Error("procMount Unmasked needs hostUsers: false")
	}
	// What `make image-test` runs the image with, and no more: nothing
	// writable, the project's seccomp profile, /proc unmasked.
	if sc != nil && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.ProcMount == nil || *sc.ProcMount != corev1.UnmaskedProcMount) {
		t.Error("the container must have a read-only root and procMount Unmasked")
	}
	if pod == nil || pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost ||
		pod.SeccompProfile.LocalhostProfile == nil || *pod.SeccompProfile.LocalhostProfile != "pyexec.json" {
		t.Error("the pod's seccomp profile must be Localhost pyexec.json (deploy/seccomp/pyexec.json), never Unconfined")
	}
	if sc != nil && sc.SeccompProfile != nil {
		t.Error("the container must not override the pod's seccomp profile")
	}
	if pod == nil || pod.AppArmorProfile == nil || pod.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Error("the AppArmor profile is Unconfined in the shipped manifest (README: deploy/apparmor for AppArmor nodes)")
	}
	// Draining: the preStop sleep lets endpoints stop routing here, then
	// the grace period covers the longest script (30 s) after SIGTERM.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds < 5 {
		t.Error("the container needs a preStop sleep of at least 5 s")
	} else if g := spec.TerminationGracePeriodSeconds; g == nil || *g < c.Lifecycle.PreStop.Sleep.Seconds+30 {
		t.Errorf("terminationGracePeriodSeconds %v must cover the preStop sleep and a 30 s script", g)
	}
	if spec.HostPID || spec.HostNetwork || spec.HostIPC || len(c.VolumeMounts) != 0 {
		t.Error("the pod needs no host namespace and no volume")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/ready" {
		t.Error("readiness must be GET /ready")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/live" {
		t.Error("liveness must be GET /live")
	}
	tokenFromSecret := false
	for _, e := range c.Env {
		if e.Name == "PYEXEC_AUTH_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			tokenFromSecret = true
		}
	}
	if !tokenFromSecret {
		t.Error("the token must come from a Secret (PYEXEC_AUTH_TOKEN)")
	}
	var port int32
	for _, p := range c.Ports {
		if p.Name == "http" {
			port = p.ContainerPort
		}
	}
	var envPort string
	for _, e := range c.Env {
		if e.Name == "PORT" {
			envPort = e.Value
		}
	}
	if port == 0 || envPort == "" || envPort != strconv.Itoa(int(port)) {
		t.Errorf("container port %d and PORT %q must agree", port, envPort)
	}
	if c.Resources.Requests.Cpu().IsZero() {
		t.Error("the HPA scales on CPU: the container needs a CPU request")
	}
	if strings.Contains(strings.Join(c.Args, " "), "--jail bwrap") {
		t.Error("production runs nsjail")
	}
}

func TestService(t *testing.T) {
	var s corev1.Service
	decodeStrict(t, "service.yaml", &s)
	if s.Kind != "Service" || len(s.Spec.Ports) == 0 || s.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("service %+v must target the named port http", s.Spec.Ports)
	}
	if s.Spec.Selector["app.kubernetes.io/name"] != "pyexec" {
		t.Errorf("selector %v", s.Spec.Selector)
	}
}

func TestHPA(t *testing.T) {
	var h autoscalingv2.HorizontalPodAutoscaler
	decodeStrict(t, "hpa.yaml", &h)
	if h.Kind != "HorizontalPodAutoscaler" || h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != "pyexec" {
		t.Errorf("hpa target %+v", h.Spec.ScaleTargetRef)
	}
	var cpu, demand bool
	for _, m := range h.Spec.Metrics {
		switch {
		case m.Resource != nil && m.Resource.Name == corev1.ResourceCPU:
			cpu = true
		case m.Pods != nil && m.Pods.Metric.Name == "pyexec_pool_demand" && m.Pods.Target.AverageValue != nil:
			demand = true
		}
	}
	if !cpu || !demand {
		t.Errorf("hpa must scale on CPU and on saturation (pyexec_pool_demand): %+v", h.Spec.Metrics)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		t.Errorf("replicas %v..%d", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	var p policyv1.PodDisruptionBudget
	decodeStrict(t, "pdb.yaml", &p)
	if p.Kind != "PodDisruptionBudget" || p.Spec.Selector == nil || p.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "pyexec" {
		t.Errorf("pdb %+v must select the pods", p.Spec)
	}
	if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("pdb must allow one pod down at a time: %+v", p.Spec)
	}
}

func TestNamespacePodSecurity(t *testing.T) {
	var n corev1.Namespace
	decodeStrict(t, "namespace.yaml", &n)
	// procMount: Unmasked is refused by baseline and restricted.
	if n.Labels["pod-security.kubernetes.io/enforce"] != "privileged" || n.Labels["pod-security.kubernetes.io/warn"] != "restricted" {
		t.Errorf("namespace labels %v", n.Labels)
	}
}

// The adapter rule serves the metric the HPA names, from series /metrics has.
func TestAdapterRule(t *testing.T) {
	var cm corev1.ConfigMap
	data, err := os.ReadFile(filepath.Join("..", "prometheus-adapter", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatal(err)
	}
	rules := cm.Data["config.yaml"]
	for _, want := range []string{"as: pyexec_pool_demand", "pyexec_pool_busy{", "pyexec_pool_waiting{"} {
		if !strings.Contains(rules, want) {
			t.Errorf("the adapter rule lacks %q", want)
		}
	}
}
