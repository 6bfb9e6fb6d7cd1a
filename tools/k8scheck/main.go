// Command k8scheck checks manifests against Kubernetes' own types. For each kustomization
// directory given it builds the output `kubectl kustomize DIR` prints (with
// sigs.k8s.io/kustomize/api, the library kubectl embeds), then decodes every object strictly
// into the k8s.io/api type of its apiVersion and kind: a field the type does not have (a
// misspelling, a field at the wrong level), a field given twice, a value of the wrong type, a
// malformed quantity, or a kind with no type here fails, naming the object and the field.
//
//	k8scheck DIR...
//
// prints one JSON object on stdout: every object checked (apiVersion, kind, namespace, name, and
// the images of its containers after kustomize's image transformer) and every error; the exit
// code is 1 when there is an error, 2 on bad usage. test/k8s-types.test.ts runs it on k8s/.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

type object struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Name       string   `json:"name"`
	Images     []string `json:"images,omitempty"`
}

type report struct {
	Objects []object `json:"objects"`
	Errors  []string `json:"errors"`
}

// The groups whose types a manifest of tokenvend's may use; anything else has no type here.
var addToScheme = []func(*runtime.Scheme) error{
	corev1.AddToScheme,
	appsv1.AddToScheme,
	autoscalingv2.AddToScheme,
	batchv1.AddToScheme,
	networkingv1.AddToScheme,
	policyv1.AddToScheme,
	rbacv1.AddToScheme,
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck KUSTOMIZATION_DIR...")
		os.Exit(2)
	}
	scheme := runtime.NewScheme()
	for _, add := range addToScheme {
		if err := add(scheme); err != nil {
			fmt.Fprintf(os.Stderr, "k8scheck: %v\n", err)
			os.Exit(2)
		}
	}
	out := report{Objects: []object{}, Errors: []string{}}
	for _, dir := range os.Args[1:] {
		check(scheme, dir, &out)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
	if len(out.Errors) > 0 {
		os.Exit(1)
	}
}

// check builds one kustomization and decodes each of its objects strictly.
func check(scheme *runtime.Scheme, dir string, out *report) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		out.Errors = append(out.Errors, fmt.Sprintf("%s: kustomize: %v", dir, err))
		return
	}
	for _, res := range resources.Resources() {
		text, err := res.AsYAML()
		gvk := schema.FromAPIVersionAndKind(res.GetApiVersion(), res.GetKind())
		name := fmt.Sprintf("%s: %s %s/%s", dir, gvk.Kind, res.GetNamespace(), res.GetName())
		if err != nil {
			out.Errors = append(out.Errors, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		typed, err := scheme.New(gvk)
		if err != nil {
			out.Errors = append(out.Errors, fmt.Sprintf("%s: no Kubernetes type for %s", name, gvk))
			continue
		}
		// Unknown and duplicate fields are errors, as with `kubectl apply --validate=strict`.
		if err := yaml.UnmarshalStrict(text, typed); err != nil {
			out.Errors = append(out.Errors, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		out.Objects = append(out.Objects, object{
			APIVersion: res.GetApiVersion(),
			Kind:       res.GetKind(),
			Namespace:  res.GetNamespace(),
			Name:       res.GetName(),
			Images:     images(typed),
		})
	}
}

// images lists the container images of a workload's pod template (or a pod's).
func images(obj runtime.Object) []string {
	var spec *corev1.PodSpec
	switch o := obj.(type) {
	case *appsv1.Deployment:
		spec = &o.Spec.Template.Spec
	case *appsv1.StatefulSet:
		spec = &o.Spec.Template.Spec
	case *appsv1.DaemonSet:
		spec = &o.Spec.Template.Spec
	case *batchv1.Job:
		spec = &o.Spec.Template.Spec
	case *batchv1.CronJob:
		spec = &o.Spec.JobTemplate.Spec.Template.Spec
	case *corev1.Pod:
		spec = &o.Spec
	default:
		return nil
	}
	var out []string
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		out = append(out, c.Image)
	}
	return out
}
