"""The control plane: a kopf operator that runs ClaudeProxy resources."""
