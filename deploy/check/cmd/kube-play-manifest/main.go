// Command kube-play-manifest writes deploy/k8s/deployment.yaml as
// `podman kube play` on one test machine can run it, for
// scripts/image-test.sh. It changes only what a single host needs and
// keeps every security setting as shipped:
//
//   - the image: the one the test built;
//
//   - one replica, listening on the test's loopback port (the pod shares
//     the host's network namespace there, as image-test's run does, and
//     podman publishes no Service), so no port list, and the probes
//     dial that port by number;
//
//   - a smaller warm pool, for a 2-CPU machine;
//
//   - the pod's Localhost seccomp profile also as the annotation
//     seccomp.security.alpha.kubernetes.io/pod: podman 4.3 reads the
//     profile only from that (deprecated) annotation, and would run the
//     pod under its own default profile, which refuses the jail;
//
//   - no resource requests or limits: rootless podman cannot set them on
//     a cgroup v1 host (runc then fails to create the container), and the
//     test machines' cgroup v1 hierarchy is never to be written to.
//
//     go run ./cmd/kube-play-manifest -image IMAGE -port PORT > kube.yaml
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

func main() {
	image := flag.String("image", "", "the image to run")
	port := flag.Int("port", 0, "the loopback port to listen on")
	dir := flag.String("dir", filepath.Join("..", "k8s"), "the manifests' folder")
	flag.Parse()
	if err := run(*dir, *image, *port); err != nil {
		fmt.Fprintln(os.Stderr, "kube-play-manifest:", err)
		os.Exit(1)
	}
}

func run(dir, image string, port int) error {
	if image == "" || port <= 0 {
		return fmt.Errorf("-image and -port are required")
	}
	data, err := os.ReadFile(filepath.Join(dir, "deployment.yaml"))
	if err != nil {
		return err
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(data, &d); err != nil {
		return fmt.Errorf("deployment.yaml: %w", err)
	}
	one := int32(1)
	d.Spec.Replicas = &one
	spec := &d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		return fmt.Errorf("%d containers, want 1", len(spec.Containers))
	}
	c := &spec.Containers[0]
	c.Image = image
	if sc := spec.SecurityContext; sc != nil && sc.SeccompProfile != nil &&
		sc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost && sc.SeccompProfile.LocalhostProfile != nil {
		if d.Spec.Template.Annotations == nil {
			d.Spec.Template.Annotations = map[string]string{}
		}
		d.Spec.Template.Annotations["seccomp.security.alpha.kubernetes.io/pod"] = "localhost/" + *sc.SeccompProfile.LocalhostProfile
	}
	c.Resources = corev1.ResourceRequirements{}
	c.Args = []string{"--warm", "2", "--max-busy", "4", "--addr", "127.0.0.1:" + strconv.Itoa(port)}
	for i := range c.Env {
		if c.Env[i].Name == "PORT" {
			c.Env[i].Value = strconv.Itoa(port)
		}
	}
	// No port list: with the host's network namespace podman refuses
	// port mappings, and it would map each containerPort. The probes name
	// the port "http", which then has no number: they get it directly.
	c.Ports = nil
	for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if probe != nil && probe.HTTPGet != nil {
			probe.HTTPGet.Port = intstr.FromInt32(int32(port))
		}
	}
	out, err := yaml.Marshal(&d)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
