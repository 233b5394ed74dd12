package inject

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/certmesh/certmesh/ca/wire"
)

// restartAlways marks an init container as a native sidecar (Kubernetes ≥ 1.29).
var restartAlways = corev1.ContainerRestartPolicyAlways

// SidecarUID is the uid both sidecars run as (Istio's proxy uid, so policies written
// for it apply); the socket's emptyDir is shared by uid.
const SidecarUID = 1337

func hardened() *corev1.SecurityContext {
	no, yes := false, true
	uid := int64(SidecarUID)
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: &no,
		ReadOnlyRootFilesystem:   &yes,
		RunAsNonRoot:             &yes,
		RunAsUser:                &uid,
		RunAsGroup:               &uid,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func requests(cpu, mem string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
	}}
}

func agentContainer(cfg Config) corev1.Container {
	return corev1.Container{
		Name:  AgentContainer,
		Image: cfg.AgentImage,
		Args: []string{
			"agent",
			"--server", cfg.ServerAddr,
			"--socket", SocketPath,
			"--trust-domain", cfg.TrustDomain.Name(),
			"--trust-bundle", BundleDir + "/" + wire.TrustBundleKey,
			"--token-file", TokenDir + "/" + TokenFile,
		},
		RestartPolicy:   &restartAlways,
		SecurityContext: hardened(),
		Resources:       requests("10m", "32Mi"),
		VolumeMounts: []corev1.VolumeMount{
			{Name: SocketVolume, MountPath: SocketDir},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
			{Name: BundleVolume, MountPath: BundleDir, ReadOnly: true},
		},
	}
}

// envoyContainer runs Envoy with the pod's rendered bootstrap inline: container
// arguments cannot be edited after creation, so the bootstrap stays what admission
// checked, and nothing has to be written anywhere (admission is side-effect free).
func envoyContainer(cfg Config, pod *corev1.Pod) (corev1.Container, error) {
	s, err := ParseSidecar(cfg.TrustDomain, pod)
	if err != nil {
		return corev1.Container{}, err
	}
	b, err := RenderBootstrap(s)
	if err != nil {
		return corev1.Container{}, err
	}
	js, err := MarshalBootstrap(b)
	if err != nil {
		return corev1.Container{}, err
	}
	var ports []corev1.ContainerPort
	for _, in := range s.Inbound {
		ports = append(ports, corev1.ContainerPort{Name: "mesh-" + itoa(in.ListenPort), ContainerPort: int32(in.ListenPort), Protocol: corev1.ProtocolTCP})
	}
	return corev1.Container{
		Name:            EnvoyContainer,
		Image:           cfg.EnvoyImage,
		Args:            []string{"--config-yaml", string(js), "--log-level", "warn"},
		RestartPolicy:   &restartAlways,
		SecurityContext: hardened(),
		Resources:       requests("50m", "64Mi"),
		Ports:           ports,
		VolumeMounts:    []corev1.VolumeMount{{Name: SocketVolume, MountPath: SocketDir}},
	}, nil
}

func volumes(cfg Config) []corev1.Volume {
	expiry := cfg.TokenExpirationSeconds
	return []corev1.Volume{
		{Name: SocketVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: cfg.TokenAudience, ExpirationSeconds: &expiry, Path: TokenFile,
			}}},
		}}},
		{Name: BundleVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.BundleConfigMap},
			Items:                []corev1.KeyToPath{{Key: wire.TrustBundleKey, Path: wire.TrustBundleKey}},
		}}},
	}
}
