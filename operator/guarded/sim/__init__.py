"""The traffic simulator: test and demo tooling that makes the metrics a real service would.

The operator judges releases by request, error and order rates that Prometheus scrapes. On the test
bed the pods are fake (kwok), so nothing would produce those numbers; this process stands in for the
service's instrumentation. It polls the API server for Ready pods that opt in with the pod annotation
``sim.guarded.dev/enabled: "true"``, splits a steady request stream among each service's Ready pods
like a Service would, and exports per-pod counters with Poisson noise from a seed.

How a version behaves comes from annotations on its pod template (error ratio, order ratio, mean
latency, the service's request rate), so a "bad release" is just a template change; two namespace
annotations model a change that hurts every version at once. See ``model`` for the annotation names.

Modules, from pure to I/O:
  * ``sampling``  random draws (Poisson, binomial, latency histogram) from a ``random.Random``;
  * ``model``     the simulation on plain data: observations in, counters out (unit-tested);
  * ``observe``   the API server's JSON lists turned into plain observations;
  * ``kube``      the two list calls per tick (polling, not watching);
  * ``exporter``  the Prometheus collector and the /metrics and /healthz HTTP server;
  * ``main``      the CLI and the poll loop.

The operator never imports this package.
"""
