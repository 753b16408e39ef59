package main

import (
	"bytes"
	"path/filepath"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var manifests = filepath.Join("..", "..", "..", "k8s")

// The played manifest is the shipped one but for the image, the Secret and
// the seccomp annotation, which names the field's profile.
func TestPlayManifest(t *testing.T) {
	out, err := playManifest(manifests, "localhost/pyexec:test", []byte("t0ken"))
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(out, []byte("---\n"))
	if len(docs) != 3 {
		t.Fatalf("%d documents, want 3 (Secret, Deployment, Service)", len(docs))
	}
	var secret corev1.Secret
	if err := yaml.UnmarshalStrict(docs[0], &secret); err != nil {
		t.Fatal(err)
	}
	if secret.Kind != "Secret" || secret.Name != secretName || string(secret.Data[secretKey]) != "t0ken" {
		t.Errorf("secret %s %s %q", secret.Kind, secret.Name, secret.Data[secretKey])
	}
	var played appsv1.Deployment
	if err := yaml.UnmarshalStrict(docs[1], &played); err != nil {
		t.Fatal(err)
	}
	shipped, _, err := deployment(manifests)
	if err != nil {
		t.Fatal(err)
	}
	if got := played.Spec.Template.Spec.Containers[0].Image; got != "localhost/pyexec:test" {
		t.Errorf("image %q", got)
	}
	want := "localhost/" + *shipped.Spec.Template.Spec.SecurityContext.SeccompProfile.LocalhostProfile
	if got := played.Spec.Template.Annotations["seccomp.security.alpha.kubernetes.io/pod"]; got != want {
		t.Errorf("seccomp annotation %q, want %q", got, want)
	}
	// Nothing else differs.
	played.Spec.Template.Spec.Containers[0].Image = shipped.Spec.Template.Spec.Containers[0].Image
	delete(played.Spec.Template.Annotations, "seccomp.security.alpha.kubernetes.io/pod")
	if len(played.Spec.Template.Annotations) == 0 {
		played.Spec.Template.Annotations = shipped.Spec.Template.Annotations
	}
	if !reflect.DeepEqual(played.Spec, shipped.Spec) {
		t.Error("the played Deployment differs from the shipped one in more than the image and the annotation")
	}
	var svc corev1.Service
	if err := yaml.UnmarshalStrict(docs[2], &svc); err != nil || svc.Kind != "Service" {
		t.Fatalf("service: %v %s", err, svc.Kind)
	}
}

func TestEndpoints(t *testing.T) {
	port, paths, err := endpoints(manifests)
	if err != nil {
		t.Fatal(err)
	}
	if port != 8080 || !reflect.DeepEqual(paths, []string{"/ready", "/live"}) {
		t.Errorf("endpoints %d %v, want 8080 [/ready /live]", port, paths)
	}
}
