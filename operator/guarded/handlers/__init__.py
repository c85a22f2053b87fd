"""kopf wiring: thin handlers that call kube -> core -> kube. Registration lives in handlers.operator."""
