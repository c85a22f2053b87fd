"""Metric providers: turning templated queries into numbers. Unaware of Kubernetes."""
