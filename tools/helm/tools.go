//go:build tools

// Package tools pins the helm command scripts/control-plane builds, so go.sum covers it.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
