"""The kind provider: real kind clusters through the kind CLI, the docker SDK and the kubernetes client."""
