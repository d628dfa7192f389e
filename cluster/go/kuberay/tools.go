//go:build tools

// Package tools only records the command scripts/cluster.sh builds.
package tools

import _ "github.com/ray-project/kuberay/ray-operator"
