// Command kube-play-manifest writes deploy/k8s as `podman kube play` plays
// it on one test machine, for scripts/kube-play-test.sh: the token's
// Secret, the Deployment and the Service, as one multi-document YAML. It
// changes only what an operator changes or what podman reads differently,
// and keeps every other setting as shipped:
//
//   - the image: the one the test built (what `kustomize edit set image`
//     does for a cluster);
//
//   - the Secret pyexec-token, holding the token the test sends (an
//     operator makes it with kubectl, docs/operations.md);
//
//   - the pod's Localhost seccomp profile also as the annotation
//     seccomp.security.alpha.kubernetes.io/pod: podman 5.4 reads a
//     Localhost profile only from that (deprecated) annotation, and would
//     otherwise run the pod under its default profile, which refuses the
//     jail. The annotation names the same profile as the field.
//
// With -endpoints it prints instead where the test reaches the pod: the
// container port the Service's targetPort names, then the readiness and
// liveness probes' paths. podman plays no Service, so the test dials that
// port as kube-proxy would forward to it.
//
//	go run ./cmd/kube-play-manifest -image IMAGE -token-file FILE > kube.yaml
//	go run ./cmd/kube-play-manifest -endpoints
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// secretName and secretKey are what the Deployment's secretKeyRef names.
const (
	secretName = "pyexec-token"
	secretKey  = "token"
)

func main() {
	image := flag.String("image", "", "the image to run")
	tokenFile := flag.String("token-file", "", "a file holding the bearer token the Secret gives the pod")
	endpoints := flag.Bool("endpoints", false, "print the Service's container port and the probes' paths, and exit")
	dir := flag.String("dir", filepath.Join("..", "k8s"), "the manifests' folder")
	flag.Parse()
	var err error
	if *endpoints {
		err = printEndpoints(*dir)
	} else {
		err = writeManifest(*dir, *image, *tokenFile)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-play-manifest:", err)
		os.Exit(1)
	}
}

func decodeStrict(dir, name string, out any) error {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func deployment(dir string) (*appsv1.Deployment, *corev1.Container, error) {
	var d appsv1.Deployment
	if err := decodeStrict(dir, "deployment.yaml", &d); err != nil {
		return nil, nil, err
	}
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		return nil, nil, fmt.Errorf("deployment.yaml: %d containers, want 1", n)
	}
	return &d, &d.Spec.Template.Spec.Containers[0], nil
}

func writeManifest(dir, image, tokenFile string) error {
	if image == "" || tokenFile == "" {
		return fmt.Errorf("-image and -token-file are required")
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	out, err := playManifest(dir, image, bytes.TrimSpace(token))
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

// playManifest is the multi-document YAML podman plays: the Secret, the
// Deployment and the Service.
func playManifest(dir, image string, token []byte) ([]byte, error) {
	d, c, err := deployment(dir)
	if err != nil {
		return nil, err
	}
	c.Image = image
	sc := d.Spec.Template.Spec.SecurityContext
	if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost ||
		sc.SeccompProfile.LocalhostProfile == nil {
		return nil, fmt.Errorf("deployment.yaml: the pod has no Localhost seccomp profile")
	}
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	d.Spec.Template.Annotations["seccomp.security.alpha.kubernetes.io/pod"] = "localhost/" + *sc.SeccompProfile.LocalhostProfile

	var svc corev1.Service
	if err := decodeStrict(dir, "service.yaml", &svc); err != nil {
		return nil, err
	}
	secret := corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: secretName},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{secretKey: token},
	}
	var out bytes.Buffer
	for i, doc := range []any{&secret, d, &svc} {
		data, err := yaml.Marshal(doc)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(data)
	}
	return out.Bytes(), nil
}

func printEndpoints(dir string) error {
	port, paths, err := endpoints(dir)
	if err != nil {
		return err
	}
	fmt.Println(port, strings.Join(paths, " "))
	return nil
}

// endpoints is the container port the Service's targetPort names and the
// readiness and liveness probes' paths.
func endpoints(dir string) (int32, []string, error) {
	_, c, err := deployment(dir)
	if err != nil {
		return 0, nil, err
	}
	var svc corev1.Service
	if err := decodeStrict(dir, "service.yaml", &svc); err != nil {
		return 0, nil, err
	}
	if len(svc.Spec.Ports) != 1 {
		return 0, nil, fmt.Errorf("service.yaml: %d ports, want 1", len(svc.Spec.Ports))
	}
	target := svc.Spec.Ports[0].TargetPort
	port := int32(0)
	for _, p := range c.Ports {
		if p.Name == target.String() || p.ContainerPort == target.IntVal {
			port = p.ContainerPort
		}
	}
	if port == 0 {
		return 0, nil, fmt.Errorf("no container port matches the Service's targetPort %s", target.String())
	}
	var paths []string
	for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			return 0, nil, fmt.Errorf("deployment.yaml: the readiness and liveness probes must be httpGet")
		}
		paths = append(paths, probe.HTTPGet.Path)
	}
	return port, paths, nil
}
